"""The payments service's settings, from the environment."""

from ticketing_common.settings import MongoSettings, NatsSettings, ServiceSettings, SessionSettings


class Settings(ServiceSettings, MongoSettings, SessionSettings, NatsSettings):
    service_name: str = "payments"
    stripe_key: str
    # Set in test mode: the Stripe SDK then talks to this Stripe-compatible server instead.
    stripe_api_base: str | None = None
    # A stuck Stripe call should not hold a request for the SDK's default 80 s.
    stripe_timeout_seconds: float = 30.0
    # Signs Stripe's webhooks (`whsec_...`). Unset: every webhook is refused as unsigned.
    stripe_webhook_secret: str | None = None
    # The reconciler runs this often, and repairs only what is older than
    # `reconcile_after_seconds`, so it does not race a request still under way.
    reconcile_seconds: float = 5.0
    reconcile_after_seconds: float = 10.0

"""The client's settings, from the environment."""

from ticketing_common.settings import ServiceSettings, SessionSettings


class Settings(ServiceSettings, SessionSettings):
    """Where the APIs are, and the JWT key that reads the session cookie and signs form tokens."""

    service_name: str = "client"
    # Direct service URLs (http://auth:3000, ...): the client never goes through the ingress.
    auth_url: str
    tickets_url: str
    orders_url: str
    payments_url: str
    # Set: card details go through Stripe.js Elements. Unset: test mode with Stripe's test cards.
    stripe_publishable_key: str | None = None
    api_timeout_seconds: float = 10.0

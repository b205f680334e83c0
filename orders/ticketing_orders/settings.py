"""The orders service's settings, from the environment."""

from ticketing_common.settings import MongoSettings, NatsSettings, ServiceSettings, SessionSettings


class Settings(ServiceSettings, MongoSettings, SessionSettings, NatsSettings):
    service_name: str = "orders"
    # How long a reservation holds before expiration cancels it (EXPIRATION_WINDOW_SECONDS).
    expiration_window_seconds: int = 900
    # An unpaid order this long past its expiry is cancelled by the sweep (a lost expiry job).
    order_overdue_grace_seconds: float = 30.0
    overdue_sweep_seconds: float = 5.0

"""The orders service's settings, from the environment."""

from ticketing_common.settings import MongoSettings, NatsSettings, ServiceSettings, SessionSettings


class Settings(ServiceSettings, MongoSettings, SessionSettings, NatsSettings):
    service_name: str = "orders"
    # How long a reservation holds before expiration cancels it (EXPIRATION_WINDOW_SECONDS).
    expiration_window_seconds: int = 900

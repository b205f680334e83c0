"""The tickets service's settings, from the environment."""

from ticketing_common.settings import (
    MongoSettings,
    NatsSettings,
    ServiceSettings,
    SessionSettings,
)


class Settings(ServiceSettings, MongoSettings, SessionSettings, NatsSettings):
    service_name: str = "tickets"

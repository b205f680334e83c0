"""Settings from the environment, shared by every service."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.requests import Request


class ServiceSettings(BaseSettings):
    """What every service reads; services add the mixins of the parts they use."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    service_name: str = "service"
    host: str = "0.0.0.0"
    port: int = 3000
    log_level: str = "INFO"
    startup_timeout_seconds: float = 60.0
    # On SIGTERM, requests (and the expiration's jobs) in progress get this long to finish.
    shutdown_grace_seconds: float = 10.0
    # Request bodies past this are refused with 413 `Request body too large` (SPEC §1).
    max_body_bytes: int = Field(default=1 << 20, gt=0)
    # Swagger UI, ReDoc and the OpenAPI JSON under the API prefix; production turns them off
    # so the API's shape is not published (SPEC §1).
    api_docs: bool = True


class MongoSettings(BaseSettings):
    mongo_uri: str


# HS256 wants a key of at least its hash's size: 256 bits.
JWT_KEY_MIN_BYTES = 32


class SessionSettings(BaseSettings):
    jwt_key: str
    jwt_ttl_seconds: int = 86400
    cookie_secure: bool = True

    @field_validator("jwt_key")
    @classmethod
    def _long_enough(cls, key: str) -> str:
        if len(key.encode()) < JWT_KEY_MIN_BYTES:
            raise ValueError(f"JWT_KEY must be at least {JWT_KEY_MIN_BYTES} bytes long")
        return key


class NatsSettings(BaseSettings):
    nats_url: str
    nats_stream: str = "TICKETING"
    # Stream limits, applied to the running streams at start (see bus.StreamLimits.of).
    nats_stream_max_age_seconds: float = 7 * 86400
    nats_stream_max_bytes: int = 1 << 30
    nats_duplicate_window_seconds: float = 3600
    nats_dead_letter_max_age_seconds: float = 30 * 86400
    nats_dead_letter_max_bytes: int = 256 << 20
    # Copies of each stream: 3 on a three-server JetStream cluster (the Kubernetes prod overlay).
    nats_stream_replicas: int = Field(default=1, ge=1, le=5)
    listener_ack_wait_seconds: float = 5.0
    listener_max_deliver: int = 10
    listener_backoff_seconds: float = 0.2
    # Events applied at once by one listener (different aggregates), and fetched per batch.
    listener_concurrency: int = 32
    listener_batch: int = 64
    outbox_sweep_seconds: float = 1.0


S = TypeVar("S", bound=BaseSettings)


def _from_files(cls: type[BaseSettings]) -> dict[str, str]:
    """`NAME_FILE` (Docker and Kubernetes secrets) stands in for a missing `NAME`."""
    values: dict[str, str] = {}
    for name in cls.model_fields:
        env = name.upper()
        path = os.environ.get(f"{env}_FILE")
        if env not in os.environ and path:
            values[name] = Path(path).read_text().strip()
    return values


def load_settings(cls: type[S], **overrides: object) -> S:
    """Build settings, or stop start-up with `<NAME> must be defined`."""
    values: dict[str, Any] = {**_from_files(cls), **overrides}
    for name in cls.model_fields:
        if os.environ.get(name.upper()) == "" and name not in values:
            values[name] = None  # an empty variable is as good as none
    try:
        return cls(**values)
    except ValidationError as exc:
        missing = [
            str(e["loc"][0]).upper()
            for e in exc.errors()
            if e["type"] == "missing" or e.get("input", "") is None
        ]
        if missing:
            raise SystemExit(f"{missing[0]} must be defined") from None
        refused = [e["ctx"]["error"] for e in exc.errors() if e["type"] == "value_error"]
        if refused:
            raise SystemExit(str(refused[0])) from None
        raise SystemExit(f"Invalid settings: {exc}") from None


async def get_settings(request: Request) -> Any:
    """Dependency: the running app's settings (annotate it with the service's Settings)."""
    return request.app.state.settings

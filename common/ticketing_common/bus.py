"""The event bus: one NATS connection, the JetStream streams, publishing that survives outages."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nats
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import PubAck, StorageType, StreamConfig
from nats.js.errors import NotFoundError as StreamNotFoundError

from ticketing_common.events import STREAM_SUBJECTS
from ticketing_common.metrics import Metrics

if TYPE_CHECKING:
    from ticketing_common.settings import NatsSettings

log = logging.getLogger("ticketing.bus")

DEAD_LETTER_STREAM = "DEADLETTERS"
DEAD_LETTER_PREFIX = "deadletter"
DAY = 86400.0


@dataclass(frozen=True)
class StreamLimits:
    """How much of its history each stream keeps: days of events, dead letters for longer."""

    max_age_seconds: float = 7 * DAY
    max_bytes: int = 1 << 30
    duplicate_window_seconds: float = 3600.0
    dead_letter_max_age_seconds: float = 30 * DAY
    dead_letter_max_bytes: int = 256 << 20
    replicas: int = 1  # copies of each stream in a NATS cluster (3 in production)

    @classmethod
    def of(cls, settings: NatsSettings) -> StreamLimits:
        """The limits a service's settings name; here, so that settings need not import NATS."""
        return cls(
            max_age_seconds=settings.nats_stream_max_age_seconds,
            max_bytes=settings.nats_stream_max_bytes,
            duplicate_window_seconds=settings.nats_duplicate_window_seconds,
            dead_letter_max_age_seconds=settings.nats_dead_letter_max_age_seconds,
            dead_letter_max_bytes=settings.nats_dead_letter_max_bytes,
            replicas=settings.nats_stream_replicas,
        )


async def _quiet(exc: Exception) -> None:
    log.warning("nats: %r", exc)


class EventBus:
    """A NATS connection with JetStream, sure of its streams."""

    def __init__(
        self,
        nc: NATS,
        stream: str,
        limits: StreamLimits | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.stream = stream
        self.limits = limits or StreamLimits()
        # The app's metrics, counting what it publishes; a bus of its own (a tool's) keeps its own.
        self.metrics = metrics or Metrics()

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str,
        stream: str,
        limits: StreamLimits | None = None,
        metrics: Metrics | None = None,
    ) -> EventBus:
        nc = await nats.connect(
            url,
            name=name,
            error_cb=_quiet,
            reconnect_time_wait=0.5,
            max_reconnect_attempts=-1,
            connect_timeout=3,
        )
        bus = cls(nc, stream, limits, metrics)
        await bus.ensure_streams()
        return bus

    def stream_configs(self) -> list[StreamConfig]:
        limits = self.limits
        window = limits.duplicate_window_seconds
        return [
            StreamConfig(
                name=self.stream,
                subjects=STREAM_SUBJECTS,
                storage=StorageType.FILE,
                max_age=limits.max_age_seconds,
                max_bytes=limits.max_bytes,
                duplicate_window=min(window, limits.max_age_seconds),
                num_replicas=limits.replicas,
            ),
            StreamConfig(
                name=DEAD_LETTER_STREAM,
                subjects=[f"{DEAD_LETTER_PREFIX}.>"],
                storage=StorageType.FILE,
                max_age=limits.dead_letter_max_age_seconds,
                max_bytes=limits.dead_letter_max_bytes,
                duplicate_window=min(window, limits.dead_letter_max_age_seconds),
                num_replicas=limits.replicas,
            ),
        ]

    async def ensure_streams(self) -> None:
        """Create the streams, or bring an existing one to the configured subjects and limits."""
        for config in self.stream_configs():
            assert config.name is not None
            try:
                current = (await self.js.stream_info(config.name)).config
            except StreamNotFoundError:
                await self.js.add_stream(config)
                continue
            if _drifted(current, config):
                log.info("updating stream %s to %s", config.name, config)
                await self.js.update_stream(config)

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def publish(
        self,
        subject: str,
        data: bytes,
        msg_id: str,
        *,
        attempts: int = 5,
        headers: dict[str, Any] | None = None,
    ) -> PubAck:
        """Publish once per `msg_id`: retried with the same id, so JetStream drops repeats."""
        for attempt in range(1, attempts + 1):
            try:
                ack = await self.js.publish(
                    subject, data, timeout=2, headers={**(headers or {}), "Nats-Msg-Id": msg_id}
                )
                if not ack.duplicate:
                    self.metrics.events_published.labels(subject).inc()
                return ack
            except (NatsTimeoutError, NoRespondersError):
                if attempt == attempts:
                    raise
                await asyncio.sleep(min(0.2 * 2**attempt, 2))
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.drain()


def _drifted(current: StreamConfig, wanted: StreamConfig) -> bool:
    def close(a: float | None, b: float | None) -> bool:
        return abs((a or 0) - (b or 0)) < 1e-3

    return (
        sorted(current.subjects or []) != sorted(wanted.subjects or [])
        or current.max_bytes != wanted.max_bytes
        or (current.num_replicas or 1) != (wanted.num_replicas or 1)
        or not close(current.max_age, wanted.max_age)
        or not close(current.duplicate_window, wanted.duplicate_window)
    )

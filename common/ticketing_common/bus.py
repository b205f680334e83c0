"""The event bus: one NATS connection, the JetStream streams, publishing that survives outages."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import PubAck, StorageType, StreamConfig
from nats.js.errors import NotFoundError as StreamNotFoundError

from ticketing_common.events import STREAM_SUBJECTS

log = logging.getLogger("ticketing.bus")

DEAD_LETTER_STREAM = "DEADLETTERS"
DEAD_LETTER_PREFIX = "deadletter"
DUPLICATE_WINDOW_SECONDS = 3600


async def _quiet(exc: Exception) -> None:
    log.warning("nats: %r", exc)


class EventBus:
    """A NATS connection with JetStream, sure of its streams."""

    def __init__(self, nc: NATS, stream: str) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.stream = stream

    @classmethod
    async def connect(cls, url: str, *, name: str, stream: str) -> EventBus:
        nc = await nats.connect(
            url,
            name=name,
            error_cb=_quiet,
            reconnect_time_wait=0.5,
            max_reconnect_attempts=-1,
            connect_timeout=3,
        )
        bus = cls(nc, stream)
        await bus.ensure_streams()
        return bus

    async def ensure_streams(self) -> None:
        for name, subjects in (
            (self.stream, STREAM_SUBJECTS),
            (DEAD_LETTER_STREAM, [f"{DEAD_LETTER_PREFIX}.>"]),
        ):
            config = StreamConfig(
                name=name,
                subjects=subjects,
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
            )
            try:
                await self.js.stream_info(name)
            except StreamNotFoundError:
                await self.js.add_stream(config)

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
                return await self.js.publish(
                    subject, data, timeout=2, headers={**(headers or {}), "Nats-Msg-Id": msg_id}
                )
            except (NatsTimeoutError, NoRespondersError):
                if attempt == attempts:
                    raise
                await asyncio.sleep(min(0.2 * 2**attempt, 2))
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.drain()

"""Listeners: durable queue-group consumers with explicit ack, back-off and dead letters."""

from __future__ import annotations

import asyncio
import json
import logging
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from ticketing_common.bus import DEAD_LETTER_PREFIX, EventBus
from ticketing_common.events import Event
from ticketing_common.settings import NatsSettings

if TYPE_CHECKING:
    from ticketing_common.service import Runtime

log = logging.getLogger("ticketing.listener")

E = TypeVar("E", bound=Event)


class Retry(Exception):
    """The event cannot apply yet (e.g. its predecessor has not landed): redeliver it later."""


class Listener(ABC, Generic[E]):
    """Applies one subject's events; each service's replicas share one durable consumer."""

    event_type: ClassVar[type[Event]]

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        assert isinstance(settings, NatsSettings) and runtime.bus is not None
        self.runtime: Runtime = runtime
        self.bus: EventBus = runtime.bus
        self.service: str = runtime.settings.service_name
        self.ack_wait: float = settings.listener_ack_wait_seconds
        self.max_deliver: int = settings.listener_max_deliver
        self.backoff: float = settings.listener_backoff_seconds
        self._sub: Any = None
        self._busy: asyncio.Lock = asyncio.Lock()
        self._stopping: bool = False

    @property
    def subject(self) -> str:
        return str(self.event_type.subject)

    @property
    def durable(self) -> str:
        # One durable per (service, subject): nats-py silently rebinds a reused name.
        return f"{self.service}-{self.subject.replace('.', '-')}"

    @abstractmethod
    async def handle(self, event: E) -> None:
        """Apply the event; raise Retry to have it redelivered later."""

    async def start(self) -> None:
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            deliver_policy=DeliverPolicy.ALL,
            max_deliver=-1,  # the bound is ours, so that the last try leaves a dead letter
        )
        self._sub = await self.bus.js.subscribe(
            self.subject,
            queue=self.durable,
            cb=self._on_message,
            manual_ack=True,
            stream=self.bus.stream,
            config=config,
        )

    async def stop(self) -> None:
        """Finish the event in hand, then stop consuming; the rest goes to other replicas."""
        self._stopping = True
        async with self._busy:
            if self._sub is not None:
                await self._sub.unsubscribe()
                self._sub = None

    async def _on_message(self, msg: Msg) -> None:
        if self._stopping:
            return  # not acked: redelivered after ack wait
        async with self._busy:
            await self._process(msg)

    async def _process(self, msg: Msg) -> None:
        deliveries = msg.metadata.num_delivered if msg.metadata else 1
        try:
            event = self.event_type.model_validate_json(msg.data)
        except ValidationError as exc:
            await self._dead_letter(msg, f"malformed event: {exc}", deliveries)
            return
        try:
            await self.handle(event)  # type: ignore[arg-type,unused-ignore]
        except Exception as exc:
            reason = "retry" if isinstance(exc, Retry) else "error"
            if deliveries >= self.max_deliver:
                await self._dead_letter(msg, repr(exc), deliveries)
                return
            if reason == "error":
                log.warning(
                    "%s failed on %s (try %d): %r", self.durable, msg.subject, deliveries, exc
                )
            await msg.nak(delay=min(self.backoff * 2 ** (deliveries - 1), 10.0))
            return
        await msg.ack()

    async def _dead_letter(self, msg: Msg, error: str, deliveries: int) -> None:
        record = {
            "service": self.service,
            "consumer": self.durable,
            "subject": msg.subject,
            "data": msg.data.decode(errors="replace"),
            "error": error,
            "deliveries": deliveries,
            "streamSeq": msg.metadata.sequence.stream if msg.metadata else None,
            "failedAt": datetime.now(UTC).isoformat(),
        }
        log.error("dead letter from %s: %s", self.durable, error)
        await self.bus.publish(
            f"{DEAD_LETTER_PREFIX}.{self.service}",
            json.dumps(record).encode(),
            f"dead:{self.durable}:{record['streamSeq']}",
        )
        await msg.term()

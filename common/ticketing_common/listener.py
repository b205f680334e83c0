"""Listeners: durable pull consumers with explicit ack, back-off and dead letters, each applying
one event type through the service's handler for it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Generic, TypeVar

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from ticketing_common import tracing
from ticketing_common.bus import DEAD_LETTER_PREFIX, EventBus
from ticketing_common.events import Event
from ticketing_common.metrics import Metrics
from ticketing_common.runtime import Runtime
from ticketing_common.settings import NatsSettings

log = logging.getLogger("ticketing.listener")

# How long one fetch waits for messages; also how long a stop may wait for the fetch in flight.
FETCH_SECONDS = 0.5
# How long a scrape waits for JetStream to tell a consumer's lag.
LAG_READ_SECONDS = 0.5

E = TypeVar("E", bound=Event)


def durable_name(service: str, subject: str) -> str:
    """One durable consumer per (service, subject): a consumer filters one subject."""
    return f"{service}-{subject.replace('.', '-')}"


class Retry(Exception):
    """The event cannot apply yet (e.g. its predecessor has not landed): redeliver it later."""


class Listener(Generic[E]):
    """Applies one subject's events; each service's replicas share one durable pull consumer.

    Messages are fetched in batches and applied concurrently (up to `listener_concurrency`),
    except that events of one key (the aggregate they change) are applied one after another,
    in stream order. Each is acked only after `apply` has stored its change; `apply` raises
    Retry to have an event redelivered later.
    """

    def __init__(
        self,
        runtime: Runtime,
        event_type: type[E],
        apply: Callable[[E], Awaitable[None]],
        key: Callable[[E], str],
    ) -> None:
        settings = runtime.settings
        assert isinstance(settings, NatsSettings) and runtime.bus is not None
        self.event_type: type[E] = event_type
        self.apply: Callable[[E], Awaitable[None]] = apply
        self.key: Callable[[E], str] = key
        self.bus: EventBus = runtime.bus
        self.metrics: Metrics = runtime.metrics
        self.service: str = runtime.settings.service_name
        self.ack_wait: float = settings.listener_ack_wait_seconds
        self.max_deliver: int = settings.listener_max_deliver
        self.backoff: float = settings.listener_backoff_seconds
        self.concurrency: int = max(1, settings.listener_concurrency)
        self.batch: int = max(1, min(settings.listener_batch, self.concurrency))
        self._sub: JetStreamContext.PullSubscription | None = None
        self._loop: asyncio.Task[None] | None = None
        self._slots: asyncio.Semaphore = asyncio.Semaphore(self.concurrency)
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._stopping: bool = False

    @property
    def subject(self) -> str:
        return str(self.event_type.subject)

    @property
    def durable(self) -> str:
        return durable_name(self.service, self.subject)

    async def start(self) -> None:
        await self._ensure_consumer()
        self._sub = await self.bus.js.pull_subscribe_bind(self.durable, stream=self.bus.stream)
        self._stopping = False
        self._loop = asyncio.create_task(self._fetch_loop(), name=f"listener-{self.durable}")

    async def _ensure_consumer(self) -> None:
        config = ConsumerConfig(
            durable_name=self.durable,
            filter_subject=self.subject,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            deliver_policy=DeliverPolicy.ALL,
            max_deliver=-1,  # the bound is ours, so that the last try leaves a dead letter
            max_ack_pending=max(1000, self.concurrency * 4),
        )
        js, stream = self.bus.js, self.bus.stream
        try:
            current = await js.consumer_info(stream, self.durable)
        except NotFoundError:
            current = None
        if current is not None and current.config.deliver_subject:
            # A push consumer of an earlier release: carry on from where it had acked.
            floor = current.ack_floor.stream_seq if current.ack_floor else 0
            log.info("%s: replacing the push consumer from stream seq %d", self.durable, floor)
            await js.delete_consumer(stream, self.durable)
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = floor + 1
            current = None
        if current is None or current.config.ack_wait != config.ack_wait:
            if current is not None:
                config.deliver_policy = current.config.deliver_policy
                config.opt_start_seq = current.config.opt_start_seq
            await js.add_consumer(stream, config)

    async def stop(self) -> None:
        """Finish the events in hand, then stop consuming; the rest goes to other replicas."""
        self._stopping = True
        loop, self._loop = self._loop, None
        if loop is not None:
            await asyncio.wait({loop}, timeout=FETCH_SECONDS * 4)
            loop.cancel()
            await asyncio.wait({loop})
        while self._tails:
            await asyncio.wait(set(self._tails.values()))
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _fetch_loop(self) -> None:
        assert self._sub is not None
        delay = self.backoff
        while not self._stopping:
            # Fetch no more than there are free slots for, so no message waits unapplied.
            await self._slots.acquire()
            free = 1
            while free < self.batch and not self._slots.locked():
                await self._slots.acquire()
                free += 1
            try:
                msgs = await self._sub.fetch(free, timeout=FETCH_SECONDS)
            except (NatsTimeoutError, TimeoutError):  # nothing to fetch
                msgs = []
            except Exception as exc:  # the server is away: try again shortly
                log.warning("%s: fetch failed: %r", self.durable, exc)
                msgs = []
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                delay = self.backoff
            for msg in msgs:
                self._dispatch(msg)
            for _ in range(free - len(msgs)):
                self._slots.release()

    def _dispatch(self, msg: Msg) -> None:
        """Apply `msg` after the previous event of its key, holding one slot until done."""
        try:
            event = self.event_type.model_validate_json(msg.data)
            key = self.key(event)
        except ValidationError as exc:
            event, key = None, ""
            error = f"malformed event: {exc}"
        previous = self._tails.get(key)

        async def apply() -> None:
            try:
                if previous is not None:
                    await asyncio.wait({previous})
                if event is None:
                    await self._dead_letter(msg, error, _deliveries(msg))
                else:
                    await self._process(msg, event)
            except Exception as exc:  # the bus went away: the message comes back after ack wait
                log.warning("%s: %r", self.durable, exc)

        task = asyncio.create_task(apply())
        self._tails[key] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._tails.get(key) is finished:
                del self._tails[key]
            self._slots.release()

        task.add_done_callback(done)

    async def _process(self, msg: Msg, event: E) -> None:
        deliveries = _deliveries(msg)
        if deliveries > 1:
            self.metrics.events_redelivered.labels(msg.subject).inc()
        try:
            with tracing.consuming(msg, self.durable, self.key(event)):
                await self.apply(event)
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
        self.metrics.events_applied.labels(msg.subject).inc()

    async def read_lag(self) -> None:
        """Set this durable's pending and ack-pending gauges from JetStream (one request); when
        it does not answer, the durable has no value: its lag is unknown, not what it was."""
        pending, ack_pending = self.metrics.consumer_pending, self.metrics.consumer_ack_pending
        try:
            info = await self.bus.js.consumer_info(
                self.bus.stream, self.durable, timeout=LAG_READ_SECONDS
            )
        except Exception:
            pending.remove(self.durable)
            ack_pending.remove(self.durable)
            raise
        pending.labels(self.durable).set(info.num_pending or 0)
        ack_pending.labels(self.durable).set(info.num_ack_pending or 0)

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
        self.metrics.events_dead_lettered.labels(msg.subject).inc()


def _deliveries(msg: Msg) -> int:
    return msg.metadata.num_delivered if msg.metadata else 1

"""The connections a running service holds: what routes and event handlers reach."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ticketing_common.metrics import Metrics
from ticketing_common.periodic import Every
from ticketing_common.settings import ServiceSettings

if TYPE_CHECKING:  # the drivers' types only: a service without MongoDB or NATS never loads them
    from pymongo import AsyncMongoClient
    from pymongo.asynchronous.database import AsyncDatabase

    from ticketing_common.bus import EventBus
    from ticketing_common.mongo import Document
    from ticketing_common.outbox import OutboxRelay

T = TypeVar("T")


@dataclass
class Runtime:
    """The connections a running service holds; routes and listeners reach them through it."""

    settings: ServiceSettings
    mongo: AsyncMongoClient[Document] | None = None
    bus: EventBus | None = None
    relay: OutboxRelay | None = None
    # Further readiness checks a service adds (e.g. its Redis), each asked with a short timeout.
    checks: list[Callable[[], Awaitable[bool]]] = field(default_factory=list)
    # What the service's handlers and routes are given (its `Service.context`).
    context: Any = None
    # What its resources opened (a Stripe client, a job scheduler), one per type.
    parts: dict[type, object] = field(default_factory=dict)
    # Its app's metric families; `gauges` refresh those read only when scraped (consumer lag).
    metrics: Metrics = field(default_factory=Metrics)
    gauges: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def provide(self, part: object) -> None:
        self.parts[type(part)] = part

    def get(self, kind: type[T]) -> T:
        part = self.parts[kind]
        assert isinstance(part, kind)
        return part

    @property
    def db(self) -> AsyncDatabase[Document]:
        assert self.mongo is not None, "this service has no database"
        db: AsyncDatabase[Document] = self.mongo.get_default_database()
        return db

    async def ready(self) -> bool:
        """Whether the database, the broker and every added check answer: all asked at once,
        each given `READY_TIMEOUT_SECONDS`, so a dependency that is down is a quick `False`."""
        if self.bus is not None and not self.bus.connected:
            return False
        checks = list(self.checks)
        if self.mongo is not None:
            checks.insert(0, self._ping_mongo)
        answers = await asyncio.gather(*(_within(check) for check in checks))
        return all(answers)

    async def measure(self) -> None:
        """Refresh the gauges read at the scrape, all at once (each bounds its own wait)."""
        await asyncio.gather(*(read() for read in self.gauges), return_exceptions=True)

    async def _ping_mongo(self) -> bool:
        assert self.mongo is not None
        await self.mongo.admin.command("ping")
        return True


# How long /readyz waits for any one dependency: a healthy ping takes milliseconds.
READY_TIMEOUT_SECONDS = 0.5


async def _within(check: Callable[[], Awaitable[bool]]) -> bool:
    try:
        return bool(await asyncio.wait_for(check(), READY_TIMEOUT_SECONDS))
    except Exception:
        return False


@dataclass(frozen=True)
class Periodic:
    """A job a service runs on a timer while it is up: sweeps and reconcilers that repair what a
    lost message or a crash left behind. Every replica runs it, so it must be idempotent. Its
    interval is read from the running service's settings."""

    name: str
    seconds: Callable[[Runtime], float]
    job: Callable[[Runtime], Awaitable[object]]

    def timer(self, runtime: Runtime) -> Every:
        return Every(self.name, self.seconds(runtime), lambda: self.job(runtime))

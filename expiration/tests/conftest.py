import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from arq.connections import ArqRedis, RedisSettings, create_pool
from bson import ObjectId
from nats.js.api import ConsumerConfig, DeliverPolicy

from ticketing_common.bus import EventBus
from ticketing_common.events import OrderCreated, OrderStatus
from ticketing_expiration.service import SERVICE
from ticketing_expiration.settings import Settings
from ticketing_testing import serve


def make_settings(nats_url: str, redis_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "nats_url": nats_url,
        "redis_url": redis_url,
        "listener_backoff_seconds": 0.05,
        "listener_ack_wait_seconds": 1,
        "listener_max_deliver": 5,
        "startup_timeout_seconds": 5,
        "shutdown_grace_seconds": 2,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(nats_url: str, redis_url: str) -> Settings:
    return make_settings(nats_url, redis_url)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(SERVICE.build(settings)) as http:
        yield http


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[EventBus]:
    bus = await EventBus.connect(nats_url, name="expiration-test", stream="TICKETING")
    yield bus
    await bus.close()


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    redis = await create_pool(RedisSettings.from_dsn(redis_url))
    yield redis
    await redis.aclose()


def order_created(expires_at: datetime, order_id: str | None = None) -> OrderCreated:
    return OrderCreated(
        id=order_id or str(ObjectId()),
        version=0,
        status=OrderStatus.CREATED,
        userId=str(ObjectId()),
        expiresAt=expires_at,
        ticket={"id": str(ObjectId()), "price": 10},
    )


def in_seconds(seconds: float) -> datetime:
    """A moment with millisecond precision, as the orders service writes `expiresAt`."""
    moment = datetime.now(UTC) + timedelta(seconds=seconds)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


async def publish(bus: EventBus, event: OrderCreated) -> int:
    """Publish with a fresh message id each time, so that a repeat really reaches the service."""
    data = json.dumps(event.payload()).encode()
    return (await bus.publish(str(event.subject), data, str(ObjectId()))).seq


async def acked(bus: EventBus, durable: str, seq: int) -> bool:
    info = await bus.js.consumer_info(bus.stream, durable)
    return info.ack_floor.stream_seq >= seq and info.num_ack_pending == 0


class Expirations:
    """A subscription to `expiration.complete` on the real bus, from the stream's start."""

    def __init__(self) -> None:
        self.received: list[tuple[dict, str | None]] = []
        self._sub = None

    async def start(self, bus: EventBus) -> None:
        async def on_message(msg) -> None:
            headers = msg.headers or {}
            self.received.append((json.loads(msg.data), headers.get("Nats-Msg-Id")))
            await msg.ack()

        self._sub = await bus.js.subscribe(
            "expiration.complete",
            cb=on_message,
            stream=bus.stream,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def of(self, order_id: str) -> list:
        return [r for r in self.received if r[0].get("orderId") == order_id]


@pytest.fixture
async def expirations(bus: EventBus) -> AsyncIterator[Expirations]:
    subscription = Expirations()
    await subscription.start(bus)
    yield subscription
    await subscription.stop()


async def fast_forward(pool: ArqRedis, job_id: str) -> None:
    """Make a deferred job due now (instead of waiting for its time in the test)."""
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    assert await pool.zadd(pool.default_queue_name, {job_id: now_ms}, xx=True, ch=True) == 1

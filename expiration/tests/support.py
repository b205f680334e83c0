"""What the expiration tests share besides fixtures: `order:created` events, moments as orders
writes them, a subscription to `expiration:complete`, and making a deferred job due now."""

import json
from datetime import UTC, datetime, timedelta

from arq.connections import ArqRedis
from bson import ObjectId
from nats.js.api import ConsumerConfig, DeliverPolicy

from ticketing_common.bus import EventBus
from ticketing_common.events import OrderCreated, OrderStatus


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


async def fast_forward(pool: ArqRedis, job_id: str) -> None:
    """Make a deferred job due now (instead of waiting for its time in the test)."""
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    assert await pool.zadd(pool.default_queue_name, {job_id: now_ms}, xx=True, ch=True) == 1

"""How late `expiration:complete` arrives after an order's `expiresAt`.

Runs the expiration service in-process on embedded NATS and Redis, publishes `order:created`
events whose `expiresAt` is spread 1-3 s ahead, and measures when each `expiration:complete`
reaches a subscriber on the bus. In the same run, and interleaved with it, a baseline does the
least a timer can: `asyncio.sleep` until `expiresAt`, then publish to NATS directly. The
ratio is the price of the durable path (Redis job, worker poll, retry on failure) on this
machine; the service's lateness should track `--poll-delay` (arq's poll interval).

    .venv/bin/python bench/expiration_lateness.py [--orders 100] [--poll-delay 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bson import ObjectId
from nats.aio.msg import Msg

from ticketing_common.bus import EventBus
from ticketing_common.embedded import free_port, start_nats, start_redis
from ticketing_common.events import ExpirationComplete, OrderCreated, OrderStatus
from ticketing_expiration.service import SERVICE as EXPIRATION
from ticketing_expiration.settings import Settings
from ticketing_testing import serve

SERVICE = "expiration service (arq job)"
BASELINE = "baseline (asyncio.sleep + publish)"


def _due(seconds: float) -> datetime:
    moment = datetime.now(UTC) + timedelta(seconds=seconds)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


async def _baseline_timer(bus: EventBus, order_id: str, due: datetime) -> None:
    await asyncio.sleep(max(0.0, due.timestamp() - time.time()))
    event = ExpirationComplete(orderId=order_id)
    data = json.dumps(event.payload()).encode()
    await bus.publish(str(event.subject), data, f"baseline:{order_id}")


async def measure(
    nats_url: str, redis_url: str, orders: int, poll_delay: float
) -> dict[str, list[float]]:
    settings = Settings(nats_url=nats_url, redis_url=redis_url, poll_delay_seconds=poll_delay)
    due: dict[str, tuple[str, datetime]] = {}
    arrived: dict[str, float] = {}
    everything = asyncio.Event()

    async def on_expiration(msg: Msg) -> None:
        arrived[json.loads(msg.data)["orderId"]] = time.time()
        if len(arrived) == len(due):
            everything.set()

    async with serve(EXPIRATION.build(settings)):
        bus = await EventBus.connect(nats_url, name="bench", stream="TICKETING")
        await bus.nc.subscribe("expiration.complete", cb=on_expiration)
        timers = []
        for _ in range(orders):
            service_id, baseline_id = str(ObjectId()), str(ObjectId())
            due[service_id] = (SERVICE, _due(random.uniform(1, 3)))
            due[baseline_id] = (BASELINE, _due(random.uniform(1, 3)))
            event = OrderCreated(
                id=service_id,
                version=0,
                status=OrderStatus.CREATED,
                userId=str(ObjectId()),
                expiresAt=due[service_id][1],
                ticket={"id": str(ObjectId()), "price": 10},
            )
            await bus.publish(str(event.subject), json.dumps(event.payload()).encode(), event.id)
            timer = _baseline_timer(bus, baseline_id, due[baseline_id][1])
            timers.append(asyncio.create_task(timer))
        await asyncio.wait_for(everything.wait(), 20)
        await asyncio.gather(*timers)
        await bus.close()

    lateness: dict[str, list[float]] = {SERVICE: [], BASELINE: []}
    for order_id, (path, moment) in due.items():
        lateness[path].append(arrived[order_id] - moment.timestamp())
    return lateness


def _figures(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), statistics.quantiles(values, n=10)[-1], max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=100)
    parser.add_argument("--poll-delay", type=float, default=0.05)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nats = start_nats(Path(tmp) / "nats", free_port())
        redis = start_redis(Path(tmp) / "redis", free_port())
        try:
            started = time.perf_counter()
            lateness = asyncio.run(measure(nats.url, redis.url, args.orders, args.poll_delay))
            elapsed = time.perf_counter() - started
        finally:
            redis.stop()
            nats.stop()
    print(
        f"expiration lateness, {args.orders} orders per path, expiresAt 1-3 s ahead, "
        f"poll delay {args.poll_delay * 1000:.0f} ms ({elapsed:.1f} s run)"
    )
    print(f"{'path':<36}{'median ms':>10}{'p90 ms':>9}{'worst ms':>10}")
    figures = {path: _figures(values) for path, values in lateness.items()}
    for path, (median, p90, worst) in figures.items():
        print(f"{path:<36}{median * 1000:>10.1f}{p90 * 1000:>9.1f}{worst * 1000:>10.1f}")
    service, baseline = figures[SERVICE], figures[BASELINE]
    ratios = [s / b if b > 0 else float("inf") for s, b in zip(service, baseline, strict=True)]
    print(
        f"{'ratio service / baseline':<36}"
        + "".join(f"{r:>{w}.1f}" for r, w in zip(ratios, (10, 9, 10), strict=True))
    )


if __name__ == "__main__":
    main()

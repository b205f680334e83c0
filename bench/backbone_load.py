"""Consumers under a busy sale, through the ingress of the whole stack (as `make run` starts it).

1. Load: 10 s of `POST /api/orders` at the highest rate the API takes (a closed loop of 32
   connections, each order for a ticket of its own). Meanwhile a buyer orders, waits a second
   and pays, again and again: every answer it gets is counted. When the load stops, the time
   until every durable consumer has nothing pending or unacked (lag back to 0).
2. Expiry: 30 orders placed at once with a 5 s window; how late each `order:cancelled` reaches
   the bus after the order's `expiresAt`.

Both run on this tree and on a baseline commit (default 87627b3, before the event backbone
rework), checked out into a temporary git worktree, in the same run, one after the other.

    .venv/bin/python bench/backbone_load.py [--baseline REV] [--seconds 10] [--no-baseline]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import nats

from devstack.stack import Stack
from ticketing_common.bus import EventBus

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = [
    "common",
    "auth",
    "tickets",
    "orders",
    "payments",
    "expiration",
    "client",
    "infra/devstack",
    "infra/fakestripe",
]
BASELINE = "87627b3"
CONNECTIONS = 32


async def _signup(http: aiohttp.ClientSession, url: str, n: int) -> dict[str, str]:
    email = f"bench-{time.time_ns()}-{n}@example.com"
    async with http.post(
        f"{url}/api/users/signup", json={"email": email, "password": "secret"}
    ) as reply:
        assert reply.status == 201, await reply.text()
        return {"Cookie": f"session={reply.cookies['session'].value}"}


async def _sell(
    http: aiohttp.ClientSession, url: str, seller: dict[str, str], count: int
) -> list[str]:
    ids: list[str] = []

    async def worker() -> None:
        while len(ids) < count:
            body = {"title": "bench", "price": 10}
            async with http.post(f"{url}/api/tickets", json=body, headers=seller) as reply:
                assert reply.status == 201, await reply.text()
                ids.append((await reply.json())["id"])

    await asyncio.gather(*(worker() for _ in range(16)))
    return ids[:count]


async def _lag(bus: EventBus) -> int:
    consumers = await bus.js.consumers_info(bus.stream)
    return sum((c.num_pending or 0) + (c.num_ack_pending or 0) for c in consumers)


async def _wait_lag_zero(bus: EventBus, limit: float) -> float:
    started = time.perf_counter()
    while await _lag(bus) > 0:
        if time.perf_counter() - started > limit:
            return float("inf")
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


async def _load(stack_url: str, nats_url: str, seconds: float) -> dict[str, Any]:
    bus = await EventBus.connect(nats_url, name="bench", stream="TICKETING")
    connector = aiohttp.TCPConnector(limit=CONNECTIONS + 8)
    async with aiohttp.ClientSession(connector=connector) as http:
        seller = await _signup(http, stack_url, 0)
        buyers = [await _signup(http, stack_url, n) for n in range(1, 5)]
        prober = await _signup(http, stack_url, 99)
        expected = int(seconds * 400) + 100
        tickets = await _sell(http, stack_url, seller, expected)
        await _wait_lag_zero(bus, 600)
        pool = iter(tickets)
        statuses: Counter[int] = Counter()
        probes: Counter[str] = Counter()
        stop = time.perf_counter() + seconds
        peak = 0

        async def load(n: int) -> None:
            buyer = buyers[n % len(buyers)]
            while time.perf_counter() < stop:
                ticket = next(pool, None)
                if ticket is None:
                    return
                body = {"ticketId": ticket}
                async with http.post(f"{stack_url}/api/orders", json=body, headers=buyer) as r:
                    statuses[r.status] += 1
                    await r.read()

        async def probe() -> None:
            while time.perf_counter() < stop - 1.2:
                ticket = next(pool, None)
                if ticket is None:
                    return
                body = {"ticketId": ticket}
                async with http.post(f"{stack_url}/api/orders", json=body, headers=prober) as r:
                    order = await r.json()
                    if r.status != 201:
                        probes[f"order {r.status}"] += 1
                        continue
                await asyncio.sleep(1.0)  # the buyer reads the page, types the card
                pay = {"orderId": order["id"], "token": "pm_card_visa"}
                async with http.post(f"{stack_url}/api/payments", json=pay, headers=prober) as r:
                    text = (await r.json())["errors"][0]["message"] if r.status >= 400 else ""
                    probes[f"{r.status} {text}".strip()] += 1

        async def watch() -> None:
            nonlocal peak
            while time.perf_counter() < stop:
                peak = max(peak, await _lag(bus))
                await asyncio.sleep(0.25)

        started = time.perf_counter()
        await asyncio.gather(*(load(n) for n in range(CONNECTIONS)), probe(), watch())
        elapsed = time.perf_counter() - started
        drained = await _wait_lag_zero(bus, 300)
    await bus.close()
    return {
        "orders_per_s": statuses[201] / elapsed,
        "statuses": dict(statuses),
        "peak_lag": peak,
        "drain_seconds": drained,
        "probes": dict(probes),
    }


async def _expiry(stack_url: str, nats_url: str, orders: int) -> dict[str, Any]:
    nc = await nats.connect(nats_url)
    arrived: dict[str, float] = {}
    done = asyncio.Event()

    async def on_cancelled(msg: Any) -> None:
        arrived[json.loads(msg.data)["id"]] = time.time()
        if len(arrived) >= orders:
            done.set()

    await nc.subscribe("order.cancelled", cb=on_cancelled)
    async with aiohttp.ClientSession() as http:
        seller, buyer = await _signup(http, stack_url, 0), await _signup(http, stack_url, 1)
        tickets = await _sell(http, stack_url, seller, orders)
        bus = await EventBus.connect(nats_url, name="bench", stream="TICKETING")
        await _wait_lag_zero(bus, 60)
        await bus.close()

        async def place(ticket: str) -> dict[str, Any]:
            body = {"ticketId": ticket}
            async with http.post(f"{stack_url}/api/orders", json=body, headers=buyer) as r:
                order: dict[str, Any] = await r.json()
                return order

        placed = await asyncio.gather(*(place(t) for t in tickets))
    await asyncio.wait_for(done.wait(), 60)
    await nc.close()
    late = [arrived[o["id"]] - datetime.fromisoformat(o["expiresAt"]).timestamp() for o in placed]
    return {"median_ms": statistics.median(late) * 1000, "worst_ms": max(late) * 1000}


def _stack_env(tree: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(str(tree / p) for p in PACKAGES)
    # Tracing off: the baseline commit has none.
    return {"PYTHONPATH": path, "COOKIE_SECURE": "false", "TRACES_DIR": "", **extra}


def measure(tree: Path, seconds: float, root: Path) -> dict[str, Any]:
    with Stack(root / "load", ingress_port=0, env=_stack_env(tree)) as stack:
        load = asyncio.run(_load(stack.url, stack.urls["nats"], seconds))
    with Stack(
        root / "expiry", ingress_port=0, env=_stack_env(tree, EXPIRATION_WINDOW_SECONDS="5")
    ) as stack:
        expiry = asyncio.run(_expiry(stack.url, stack.urls["nats"], 30))
    return {"load": load, "expiry": expiry}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if not args.no_baseline:
            tree = root / "baseline"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.baseline],
                check=True,
                capture_output=True,
            )
            try:
                results["baseline"] = measure(tree, args.seconds, root / "b")
            finally:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                    check=False,
                    capture_output=True,
                )
        results["this tree"] = measure(ROOT, args.seconds, root / "t")
    print(json.dumps(results, indent=2))
    _report(results, args)


def _report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\nbackbone under load: {args.seconds:.0f} s of POST /api/orders, "
        f"{CONNECTIONS} connections"
    )
    header = f"{'measure':<46}" + "".join(f"{name:>14}" for name in results)
    print(header)
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("orders placed per s", lambda r: f"{r['load']['orders_per_s']:.0f}"),
        ("peak consumer lag (events)", lambda r: f"{r['load']['peak_lag']}"),
        ("lag back to 0 after the load (s)", lambda r: f"{r['load']['drain_seconds']:.1f}"),
        ("order:cancelled after expiresAt, median ms", lambda r: f"{r['expiry']['median_ms']:.0f}"),
        ("order:cancelled after expiresAt, worst ms", lambda r: f"{r['expiry']['worst_ms']:.0f}"),
    ]
    for name, value in rows:
        print(f"{name:<46}" + "".join(f"{value(r):>14}" for r in results.values()))
    for name, result in results.items():
        print(f"payments a second after ordering ({name}): {result['load']['probes']}")


if __name__ == "__main__":
    main()

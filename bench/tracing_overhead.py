"""What tracing costs on `POST /api/orders`: three stacks started as `make run` starts them, with
tracing off, on at 10 % sampling and on at 100 % (span files under each stack's .data/traces).
Each round places the same number of orders on each stack in turn (rotating which goes first)
and counts, per order, the CPU the whole stack spent until every consumer had caught up (so the
listeners' and relays' share of an order is in it), less what the stack spends idle in as long.
Ratios are to the off stack of the same round.

    .venv/bin/python bench/tracing_overhead.py [--rounds 5] [--orders 600] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
from load import cpu_seconds, lag_zero, sell, signup, stack_pids

from devstack.stack import Stack
from ticketing_common.bus import EventBus

SETTINGS: dict[str, dict[str, str]] = {
    "off": {"TRACES_DIR": ""},
    "on, 10 %": {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
    "on, 100 %": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
}
IDLE_SECONDS = 2.0
RESULTS = Path(__file__).parent / "results" / "tracing_overhead.json"


async def place(url: str, buyer: dict[str, str], ids: list[str], connections: int) -> list[float]:
    """One order for each ticket of `ids`, `connections` at a time; each order's latency."""
    latencies: list[float] = []
    async with aiohttp.ClientSession() as http:

        async def loop() -> None:
            while ids:
                begun = time.perf_counter()
                body = {"ticketId": ids.pop()}
                async with http.post(f"{url}/api/orders", json=body, headers=buyer) as reply:
                    await reply.read()
                    assert reply.status == 201, reply.status
                latencies.append(time.perf_counter() - begun)

        await asyncio.gather(*(loop() for _ in range(connections)))
    return latencies


async def one_round(
    stack: Stack, seller: dict[str, str], buyer: dict[str, str], args: argparse.Namespace
) -> dict[str, float]:
    ids = await sell(stack.url, seller, args.orders)
    bus = await EventBus.connect(stack.urls["nats"], name="bench", stream="TICKETING")
    try:
        await lag_zero(bus)
        pids = stack_pids(stack)
        before, started = cpu_seconds(pids), time.perf_counter()
        latencies = await place(stack.url, buyer, ids, args.connections)
        placed = time.perf_counter() - started
        await lag_zero(bus)
        busy, settled = cpu_seconds(pids) - before, time.perf_counter() - started
        idle_from = cpu_seconds(pids)
        await asyncio.sleep(IDLE_SECONDS)
        idle_rate = (cpu_seconds(pids) - idle_from) / IDLE_SECONDS
    finally:
        await bus.close()
    latencies.sort()
    return {
        "rate": round(args.orders / placed, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "cpu_ms_per_order": round(1000 * (busy - idle_rate * settled) / args.orders, 3),
    }


async def measure(args: argparse.Namespace, stacks: dict[str, Stack]) -> dict[str, Any]:
    users = {name: (await signup(s.url), await signup(s.url, 1)) for name, s in stacks.items()}
    names = list(stacks)
    rounds: list[dict[str, Any]] = []
    for number in range(args.rounds):
        row: dict[str, Any] = {}
        for name in names[number % 3 :] + names[: number % 3]:
            row[name] = await one_round(stacks[name], *users[name], args)
        for name in names:
            row[name]["ratio"] = round(row[name]["rate"] / row["off"]["rate"], 3)
            row[name]["cpu_ratio"] = round(
                row[name]["cpu_ms_per_order"] / row["off"]["cpu_ms_per_order"], 3
            )
        print(
            f"round {number + 1}: "
            + ", ".join(
                f"{n} {r['rate']:.1f}/s ({r['ratio']:.3f}), {r['cpu_ms_per_order']} ms CPU "
                f"({r['cpu_ratio']:.3f})"
                for n, r in ((n, row[n]) for n in names)
            ),
            flush=True,
        )
        rounds.append(row)
    summary = {
        name: {
            key: statistics.median(r[name][field] for r in rounds)
            for key, field in (
                ("median_rate", "rate"),
                ("median_ratio", "ratio"),
                ("median_cpu_ms_per_order", "cpu_ms_per_order"),
                ("median_cpu_ratio", "cpu_ratio"),
                ("median_p50_ms", "p50_ms"),
            )
        }
        for name in names
    }
    return {"rounds": rounds, "summary": summary, **vars(args)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--orders", type=int, default=600)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as running:
        stacks = {}
        for n, (name, env) in enumerate(SETTINGS.items()):
            root = Path(tmp) / f"stack{n}"
            root.mkdir()
            stacks[name] = running.enter_context(Stack(root, ingress_port=0, env=env))
        result = asyncio.run(measure(args, stacks))
    for name, figures in result["summary"].items():
        print(
            f"{name:<10} median {figures['median_rate']:.1f} orders/s, "
            f"ratio to off {figures['median_ratio']:.3f}; "
            f"{figures['median_cpu_ms_per_order']} ms stack CPU an order, "
            f"ratio to off {figures['median_cpu_ratio']:.3f}; p50 {figures['median_p50_ms']} ms"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""What tracing costs on `POST /api/orders`: three stacks started as `make run` starts them, with
tracing off, on at 10 % sampling and on at 100 % (span files under each stack's .data/traces),
loaded in turn, round after round, so each round's ratios to the off stack share its moment.

    .venv/bin/python bench/tracing_overhead.py [--rounds 6] [--seconds 5] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
from load import Request, closed_loop, lag_zero, sell, signup

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
RESULTS = Path(__file__).parent / "results" / "tracing_overhead.json"


async def arrange(stack: Stack) -> tuple[list[dict[str, str]], list[str]]:
    """Buyers, and the list of open tickets they order from (restocked before each round)."""
    buyers = [await signup(stack.url, n) for n in range(4)]
    return buyers, []


async def restock(stack: Stack, ids: list[str], wanted: int) -> None:
    """At least `wanted` open tickets in `ids`, replicated by orders before the round starts."""
    if len(ids) < wanted:
        seller = await signup(stack.url)
        ids += await sell(stack.url, seller, wanted - len(ids))
    bus = await EventBus.connect(stack.urls["nats"], name="bench", stream="TICKETING")
    await lag_zero(bus)
    await bus.close()


def orderer(url: str, buyers: list[dict[str, str]], ids: list[str]) -> Request:
    """One order a call, each for a ticket of its own (status 0 once they run out)."""

    async def order(http: aiohttp.ClientSession, n: int) -> int:
        if not ids:
            return 0
        body = {"ticketId": ids.pop()}
        async with http.post(f"{url}/api/orders", json=body, headers=buyers[n % 4]) as reply:
            await reply.read()
            return reply.status

    return order


async def measure(args: argparse.Namespace, stacks: dict[str, Stack]) -> dict[str, Any]:
    arranged = {name: await arrange(stack) for name, stack in stacks.items()}
    names = list(stacks)
    rounds: list[dict[str, Any]] = []
    fastest = 100.0  # orders a second: each round's stock of open tickets follows it
    for number in range(args.rounds):
        for name, (_, ids) in arranged.items():
            await restock(stacks[name], ids, int(fastest * args.seconds * 1.5) + 50)
        row: dict[str, Any] = {}
        # Each round starts with another setting, so none always goes first after a pause.
        for name in names[number % 3 :] + names[: number % 3]:
            order = orderer(stacks[name].url, *arranged[name])
            phase = await closed_loop(stacks[name], name, order, args.connections, args.seconds)
            row[name] = {
                "rate": round(phase.rate, 1),
                "p50_ms": phase.p50_ms,
                "p99_ms": phase.p99_ms,
                "statuses": phase.statuses,
                # CPU seconds the stack spent per order: less sensitive than throughput to
                # what else runs on the machine.
                "cpu_ms_per_order": round(1000 * phase.stack_cpu / phase.rate, 2),
            }
        fastest = max(fastest, *(r["rate"] for r in row.values()))
        for name in names:
            off = row["off"]
            row[name]["ratio"] = round(row[name]["rate"] / off["rate"], 3)
            row[name]["cpu_ratio"] = round(
                row[name]["cpu_ms_per_order"] / off["cpu_ms_per_order"], 3
            )
        print(
            f"round {number + 1}: "
            + ", ".join(
                f"{n} {r['rate']:.1f}/s ({r['ratio']:.3f}), {r['cpu_ms_per_order']} ms CPU "
                f"({r['cpu_ratio']:.3f})"
                for n, r in sorted(row.items(), key=lambda kv: names.index(kv[0]))
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
    return {
        "rounds": rounds,
        "summary": summary,
        "seconds": args.seconds,
        "connections": args.connections,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
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

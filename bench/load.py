"""The project's load benchmark: closed loops of HTTP/1.1 requests through the ingress of a whole
stack (as `make run` starts it), each phase at a fixed concurrency for a fixed time, every
throughput a ratio to a trivial endpoint's ceiling measured in the same run.

Phases: the ceiling (`GET /api/users/currentuser`, no cookie) through the ingress and straight
to auth; one database read (`GET /api/tickets/:id`); sell a ticket; the open-ticket page at 1k,
10k and 100k tickets in the collection; place an order; the whole purchase (order, pay, until
`complete`); a flash sale (200 buyers, one ticket, rounds); expiration lateness of the orders
placed; the stack's memory. For each phase: requests per second, p50/p99/max, the CPU the stack
used and the CPU the load generator used (a phase whose generator was busy near a whole core
is flagged: the generator, not the system, may have been the limit).

    .venv/bin/python bench/load.py [--seconds 10] [--connections 32] [--sizes 1000,10000,100000]

Writes bench/results/load.json and PNG charts next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from bson import ObjectId
from pymongo import AsyncMongoClient

from devstack.stack import Stack
from ticketing_common.bus import EventBus

RESULTS = Path(__file__).resolve().parent / "results"
TICK = os.sysconf("SC_CLK_TCK")
# Requests are one async call each; near this share of one core the generator is the limit.
GENERATOR_BUSY = 0.85
FLASH_BUYERS, FLASH_ROUNDS = 200, 5
EXPIRY_WINDOW_SECONDS = 30

Request = Callable[[aiohttp.ClientSession, int], Awaitable[int]]


@dataclass
class Phase:
    name: str
    requests: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    stack_cpu: float = 0.0  # cores the stack used on average
    generator_cpu: float = 0.0  # cores the load generator used on average
    ratio: float | None = None  # throughput over the ceiling's
    note: str = ""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "rate": round(self.rate, 1)}


# --- the stack's processes ----------------------------------------------------------------------


def stack_pids(stack: Stack) -> list[int]:
    """Every process of the stack: each part leads its own process group."""
    groups = {p.process.pid for p in stack.parts}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in groups:
            pids.append(int(entry.name))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def memory_mb(pids: list[int]) -> dict[str, float]:
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return {"rss_mb": round(rss / 1024, 1), "pss_mb": round(pss / 1024, 1), "processes": len(pids)}


# --- closed loops -------------------------------------------------------------------------------


async def closed_loop(
    stack: Stack, name: str, request: Request, connections: int, seconds: float
) -> Phase:
    """`connections` loops, each sending its next request when the last one answered."""
    pids = stack_pids(stack)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:
        start_cpu, start_own = cpu_seconds(pids), time.process_time()
        started = time.perf_counter()
        stop = started + seconds

        async def loop(n: int) -> None:
            while (begun := time.perf_counter()) < stop:
                statuses[await request(http, n)] += 1
                latencies.append(time.perf_counter() - begun)

        await asyncio.gather(*(loop(n) for n in range(connections)))
        wall = time.perf_counter() - started
        stack_cpu = (cpu_seconds(pids) - start_cpu) / wall
        generator_cpu = (time.process_time() - start_own) / wall
    return summarize(name, latencies, statuses, wall, stack_cpu, generator_cpu)


def summarize(
    name: str,
    latencies: list[float],
    statuses: Counter[int],
    wall: float,
    stack_cpu: float = 0.0,
    generator_cpu: float = 0.0,
) -> Phase:
    ordered = sorted(latencies) or [0.0]
    phase = Phase(
        name,
        requests=len(latencies),
        seconds=round(wall, 2),
        statuses={str(k): v for k, v in sorted(statuses.items())},
        p50_ms=round(ordered[len(ordered) // 2] * 1000, 1),
        p99_ms=round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        max_ms=round(ordered[-1] * 1000, 1),
        stack_cpu=round(stack_cpu, 2),
        generator_cpu=round(generator_cpu, 2),
    )
    if generator_cpu >= GENERATOR_BUSY:
        phase.note = "generator-bound"
    return phase


def get(url: str, headers: dict[str, str] | None = None) -> Request:
    async def send(http: aiohttp.ClientSession, n: int) -> int:
        async with http.get(url, headers=headers) as reply:
            await reply.read()
            return reply.status

    return send


def post(url: str, body: Callable[[int], dict[str, Any]], headers: dict[str, str]) -> Request:
    async def send(http: aiohttp.ClientSession, n: int) -> int:
        async with http.post(url, json=body(n), headers=headers) as reply:
            await reply.read()
            return reply.status

    return send


# --- arranging ----------------------------------------------------------------------------------


async def signup(url: str, n: int = 0) -> dict[str, str]:
    """A new user's session cookie, as a header; a busy auth (503) is asked again when its
    `Retry-After` says."""
    email = f"load-{time.time_ns()}-{n}@example.com"
    async with aiohttp.ClientSession() as http:
        while True:
            body = {"email": email, "password": "secret"}
            async with http.post(f"{url}/api/users/signup", json=body) as r:
                if r.status == 503:
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                    continue
                assert r.status == 201, await r.text()
                return {"Cookie": f"session={r.cookies['session'].value}"}


async def sell(url: str, seller: dict[str, str], count: int) -> list[str]:
    ids: list[str] = []
    async with aiohttp.ClientSession() as http:

        async def worker() -> None:
            while len(ids) < count:
                body = {"title": "load", "price": 10}
                async with http.post(f"{url}/api/tickets", json=body, headers=seller) as reply:
                    assert reply.status == 201, await reply.text()
                    ids.append((await reply.json())["id"])

        await asyncio.gather(*(worker() for _ in range(16)))
    return ids[:count]


async def lag_zero(bus: EventBus) -> None:
    """Until every consumer has nothing pending or unacked: the replicas have caught up."""
    while True:
        consumers = await bus.js.consumers_info(bus.stream)
        if not any((c.num_pending or 0) + (c.num_ack_pending or 0) for c in consumers):
            return
        await asyncio.sleep(0.1)


async def grow_tickets(mongo: AsyncMongoClient[dict[str, Any]], total: int) -> None:
    """Fill the tickets collection up to `total` documents, half of them reserved (an order
    holds them), as a marketplace that has run for a while; written straight to the database
    in the shape the tickets service stores."""
    tickets = mongo["tickets"]["tickets"]
    have = await tickets.estimated_document_count()
    batch = []
    for n in range(have, total):
        doc = {"_id": ObjectId(), "title": f"seed {n}", "price": 10, "userId": "seed"}
        doc |= {"version": 0, "rev": 0}
        if n % 2:
            doc["orderId"] = str(ObjectId())
        else:
            doc["listing"] = str(doc["_id"])  # as tickets stores an open one
        batch.append(doc)
        if len(batch) == 5000:
            await tickets.insert_many(batch, ordered=False)
            batch = []
    if batch:
        await tickets.insert_many(batch, ordered=False)


# --- the phases ---------------------------------------------------------------------------------


async def purchases(
    stack: Stack, buyers: list[dict[str, str]], tickets: list[str], connections: int, s: float
) -> Phase:
    """Order, pay, and poll the order until `complete`: one purchase a loop turn."""
    pool = iter(tickets)
    url = stack.url

    async def purchase(http: aiohttp.ClientSession, n: int) -> int:
        buyer = buyers[n % len(buyers)]
        body = {"ticketId": next(pool)}
        async with http.post(f"{url}/api/orders", json=body, headers=buyer) as reply:
            if reply.status != 201:
                return reply.status
            order = (await reply.json())["id"]
        pay = {"orderId": order, "token": "pm_card_visa"}
        async with http.post(f"{url}/api/payments", json=pay, headers=buyer) as reply:
            await reply.read()
            if reply.status != 201:
                return reply.status
        while True:
            async with http.get(f"{url}/api/orders/{order}", headers=buyer) as reply:
                if (await reply.json())["status"] == "complete":
                    return 200
            await asyncio.sleep(0.01)

    return await closed_loop(stack, "whole purchase", purchase, connections, s)


async def flash_sale(stack: Stack, seller: dict[str, str], bus: EventBus) -> Phase:
    """FLASH_BUYERS buyers order one ticket at the same moment, FLASH_ROUNDS times: exactly one
    winner a round, every other buyer a 400."""
    buyers = await asyncio.gather(*(signup(stack.url, n) for n in range(FLASH_BUYERS)))
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    winners = []
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=FLASH_BUYERS)) as http:
        for _ in range(FLASH_ROUNDS):
            ticket = (await sell(stack.url, seller, 1))[0]
            await lag_zero(bus)
            gate = asyncio.Event()

            async def buy(
                buyer: dict[str, str], ticket: str = ticket, gate: asyncio.Event = gate
            ) -> int:
                await gate.wait()
                begun = time.perf_counter()
                body = {"ticketId": ticket}
                async with http.post(f"{stack.url}/api/orders", json=body, headers=buyer) as r:
                    await r.read()
                latencies.append(time.perf_counter() - begun)
                return r.status

            tasks = [asyncio.create_task(buy(b)) for b in buyers]
            await asyncio.sleep(0)
            gate.set()
            answers = await asyncio.gather(*tasks)
            statuses.update(answers)
            winners.append(answers.count(201))
    phase = summarize("flash sale", latencies, statuses, time.perf_counter() - started)
    phase.note = f"winners per round {winners}"
    return phase


class Expiries:
    """When each `order:cancelled` reaches the bus, against the order's `expiresAt`."""

    def __init__(self) -> None:
        self.expires: dict[str, float] = {}
        self.arrived: dict[str, float] = {}
        self.all_arrived = asyncio.Event()

    async def on_cancelled(self, msg: Any) -> None:
        self.arrived.setdefault(json.loads(msg.data)["id"], time.time())
        if all(order in self.arrived for order in self.expires):
            self.all_arrived.set()

    def expect(self, order: dict[str, Any]) -> None:
        self.expires[order["id"]] = datetime.fromisoformat(order["expiresAt"]).timestamp()

    def summary(self) -> dict[str, Any]:
        late = sorted((self.arrived[o] - t) * 1000 for o, t in self.expires.items())
        if not late:
            return {"orders": 0}
        return {
            "orders": len(late),
            "p50_ms": round(late[len(late) // 2], 1),
            "p99_ms": round(late[min(len(late) - 1, int(len(late) * 0.99))], 1),
            "max_ms": round(late[-1], 1),
        }


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    # Tracing off, as deployed by default (bench/tracing_overhead.py measures what it costs).
    env = {"EXPIRATION_WINDOW_SECONDS": str(EXPIRY_WINDOW_SECONDS), "TRACES_DIR": ""}
    with Stack(root, env=env) as stack:
        url, c, s = stack.url, args.connections, args.seconds
        bus = await EventBus.connect(stack.urls["nats"], name="load", stream="TICKETING")
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.urls["mongo"])
        expiries = Expiries()
        await bus.nc.subscribe("order.cancelled", cb=expiries.on_cancelled)
        phases: list[Phase] = []

        async def phase(name: str, request: Request) -> Phase:
            result = await closed_loop(stack, name, request, c, s)
            phases.append(result)
            print(
                f"{name:<34} {result.rate:8.1f} req/s  p99 {result.p99_ms:7.1f} ms "
                f"{result.statuses} {result.note}",
                flush=True,
            )
            return result

        ceiling = await phase("ceiling", get(f"{url}/api/users/currentuser"))
        await phase(
            "ceiling, straight to auth", get(f"{stack.service_urls['auth']}/api/users/currentuser")
        )
        seller = await signup(url)
        one = (await sell(url, seller, 1))[0]
        await phase("one read: GET /api/tickets/:id", get(f"{url}/api/tickets/{one}"))
        created = await phase(
            "POST /api/tickets",
            post(f"{url}/api/tickets", lambda n: {"title": "load", "price": 10}, seller),
        )
        for size in args.sizes:
            await grow_tickets(mongo, size)
            await phase(
                f"GET /api/tickets at {size:,} tickets", get(f"{url}/api/tickets?limit=100")
            )

        buyers = [await signup(url, n) for n in range(4)]
        wanted = int(created.rate * s * 1.2) + 200
        tickets = await sell(url, seller, wanted)
        await lag_zero(bus)
        pool = iter(tickets)

        async def order(http: aiohttp.ClientSession, n: int) -> int:
            body = {"ticketId": next(pool)}
            buyer = buyers[n % len(buyers)]
            async with http.post(f"{url}/api/orders", json=body, headers=buyer) as reply:
                if reply.status == 201:
                    expiries.expect(await reply.json())
                else:
                    await reply.read()
                return reply.status

        await phase("POST /api/orders", order)
        more = await sell(url, seller, 2000)
        await lag_zero(bus)
        phases.append(await purchases(stack, buyers, more, c, s))
        print(f"whole purchase {phases[-1].rate:.1f}/s p99 {phases[-1].p99_ms} ms", flush=True)
        phases.append(await flash_sale(stack, seller, bus))
        print(f"flash sale {phases[-1].note}", flush=True)

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(expiries.all_arrived.wait(), EXPIRY_WINDOW_SECONDS + 120)
        memory = memory_mb(stack_pids(stack))
        await bus.close()
        await mongo.close()

    for p in phases:
        if p.name != "flash sale":
            p.ratio = round(p.rate / ceiling.rate, 3) if ceiling.rate else None
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "seconds": s,
        "connections": c,
        "phases": [p.row() for p in phases],
        "expiration_lateness": expiries.summary(),
        "memory": memory,
    }


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def charts(result: dict[str, Any], folder: Path) -> list[Path]:
    """Throughput as ratios to the ceiling, latencies, and the list page against its size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = [p for p in result["phases"] if p["ratio"] is not None]
    names = [p["name"] for p in phases]
    made = []

    fig, ax = plt.subplots(figsize=(9, 5))
    ax.barh(names[::-1], [p["ratio"] for p in phases][::-1], color="#4477aa")
    ax.set_xlabel("throughput / ceiling (same run)")
    ax.set_title("Throughput through the ingress, as a ratio to the ceiling")
    fig.tight_layout()
    made.append(folder / "load-throughput.png")
    fig.savefig(made[-1], dpi=110)

    fig, ax = plt.subplots(figsize=(9, 5))
    p99 = [p["p99_ms"] for p in phases][::-1]
    ax.barh(names[::-1], p99, color="#cc6677", label="p99")
    ax.barh(names[::-1], [p["p50_ms"] for p in phases][::-1], color="#4477aa", label="p50")
    ax.set_xlabel("ms")
    ax.legend()
    ax.set_title("Latency per request (closed loop)")
    fig.tight_layout()
    made.append(folder / "load-latency.png")
    fig.savefig(made[-1], dpi=110)

    listing = [p for p in phases if p["name"].startswith("GET /api/tickets at")]
    if listing:
        fig, ax = plt.subplots(figsize=(6, 4))
        sizes = [int(p["name"].split(" at ")[1].split()[0].replace(",", "")) for p in listing]
        ax.plot(sizes, [p["ratio"] for p in listing], marker="o")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("tickets in the collection")
        ax.set_ylabel("throughput / ceiling")
        ax.set_title("The open-ticket page as the marketplace grows")
        fig.tight_layout()
        made.append(folder / "load-listing.png")
        fig.savefig(made[-1], dpi=110)
    plt.close("all")
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[1000, 10000, 100000]
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="load-") as root:
        result = asyncio.run(run(args, Path(root)))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "load.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("expiration_lateness", "memory")}))
    for chart in charts(result, args.out):
        print(f"chart: {chart}")


if __name__ == "__main__":
    main()

"""The event backbone's costs: the outbox sweep, a listener's throughput, and database commands
per purchase, each measured for this tree and for a baseline tree in the same run.

The baseline is another commit of this repository (default: the one before the outbox rework,
87627b3), checked out into a temporary git worktree and imported instead of this tree's
packages; both run the same measurement code on the same embedded servers, one after the other.

- sweep: one relay pass with nothing pending, over 1k, 10k and 100k documents in a collection.
- listener: `ticket:created` events applied per second by the orders service's listener.
- purchase: MongoDB commands, summed across tickets, orders and payments (a PyMongo command
  listener in one process running the three services), for order, pay and complete, purchases
  one after the other; the count ends once every outbox is empty again (clean-up included).

    .venv/bin/python bench/event_backbone.py [--baseline REV] [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["common", "tickets", "orders", "payments", "infra/fakestripe"]
BASELINE = "87627b3"


# --- measurements, run in a child process against one tree ---------------------------------


async def _sweep_cost(mongo_url: str, sizes: list[int]) -> dict[str, float]:
    from bson import ObjectId

    from ticketing_common.mongo import connect, database
    from ticketing_common.outbox import OutboxRelay

    class Nobody:
        async def publish(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError("nothing is pending")

    results: dict[str, float] = {}
    client = connect(f"{mongo_url}/bench_sweep")
    db = database(client)
    try:
        for size in sizes:
            collection = db[f"docs_{size}"]
            await collection.drop()
            relay = OutboxRelay(Nobody(), [collection])  # type: ignore[arg-type]
            created = await _with_outbox_index(collection)
            docs = [{"_id": ObjectId(), "title": "x" * 40, "version": 0} for _ in range(size)]
            for start in range(0, size, 5000):
                await collection.insert_many(docs[start : start + 5000])
            # The baseline's relay has `publish_pending` (a pass over every collection).
            sweep = getattr(relay, "sweep", None) or relay.publish_pending  # type: ignore[attr-defined]
            kwargs = {"older_than": 0} if hasattr(relay, "sweep") else {}
            await sweep(**kwargs)
            rounds = 20
            started = time.perf_counter()
            for _ in range(rounds):
                await sweep(**kwargs)
            results[str(size)] = (time.perf_counter() - started) / rounds * 1000
            results[f"{size}_indexed"] = float(created)
            await collection.drop()
    finally:
        await client.close()
    return results


async def _with_outbox_index(collection: Any) -> bool:
    try:
        from ticketing_common.outbox import OUTBOX_INDEX
    except ImportError:
        return False
    await collection.create_index(OUTBOX_INDEX.keys, sparse=OUTBOX_INDEX.sparse)
    return True


def _builder(package: str) -> Any:
    """A service's app builder: its declaration, or an older tree's `main.build`."""
    try:
        return importlib.import_module(f"{package}.service").SERVICE.build
    except ImportError:
        return importlib.import_module(f"{package}.main").build


def _settings(cls: Any, mongo_url: str, db: str, nats_url: str, **extra: Any) -> Any:
    from ticketing_testing import TEST_JWT_KEY

    return cls(
        mongo_uri=f"{mongo_url}/{db}",
        nats_url=nats_url,
        jwt_key=TEST_JWT_KEY,
        cookie_secure=False,
        **extra,
    )


async def _reset_bus(nats_url: str) -> None:
    import nats

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    for stream in ("TICKETING", "DEADLETTERS"):
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
    await nc.close()


async def _drop(mongo_url: str, *names: str) -> None:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    for name in names:
        await client.drop_database(name)
    await client.close()


async def _listener_rate(mongo_url: str, nats_url: str, events: int) -> float:
    """Publish `events` ticket:created first, then start orders and time until all applied."""
    from bson import ObjectId

    from ticketing_common.bus import EventBus
    from ticketing_common.events import TicketCreated
    from ticketing_common.mongo import connect, database

    build = _builder("ticketing_orders")
    from ticketing_orders.settings import Settings
    from ticketing_testing import serve

    await _reset_bus(nats_url)
    await _drop(mongo_url, "bench_listener")
    bus = await EventBus.connect(nats_url, name="bench", stream="TICKETING")
    for _ in range(events):
        oid = str(ObjectId())
        event = TicketCreated(id=oid, version=0, title="t", price=10, userId=oid)
        await bus.publish(str(event.subject), json.dumps(event.payload()).encode(), oid)
    settings = _settings(Settings, mongo_url, "bench_listener", nats_url)
    mongo = connect(f"{mongo_url}/bench_listener")
    replica = database(mongo)["tickets"]
    try:
        async with serve(build(settings)):
            started = time.perf_counter()
            while await replica.count_documents({}) < events:  # noqa: ASYNC110 (polls the db)
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - started
    finally:
        await mongo.close()
        await bus.close()
    return events / elapsed


def _command_counter() -> Any:
    """A PyMongo command listener counting commands by name while `counting` is on."""
    from pymongo import monitoring

    class Commands(monitoring.CommandListener):
        def __init__(self) -> None:
            self.counting = False
            self.counts: Counter[str] = Counter()

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if self.counting:
                self.counts[event.command_name] += 1

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    return Commands()


async def _purchase_commands(
    mongo_url: str, nats_url: str, stripe_url: str, purchases: int
) -> dict[str, float]:
    from contextlib import AsyncExitStack

    from pymongo import AsyncMongoClient, monitoring

    from ticketing_common.bus import EventBus
    from ticketing_testing import bearer, serve

    # Made before the counter is registered, so its own polling is not counted.
    watcher: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    commands = _command_counter()
    monitoring.register(commands)
    build_orders = _builder("ticketing_orders")
    from ticketing_orders.settings import Settings as OrdersSettings

    build_payments = _builder("ticketing_payments")
    from ticketing_payments.settings import Settings as PaymentsSettings

    build_tickets = _builder("ticketing_tickets")
    from ticketing_tickets.settings import Settings as TicketsSettings

    await _reset_bus(nats_url)
    await _drop(mongo_url, "bench_tickets", "bench_orders", "bench_payments")
    stripe = {"stripe_key": "sk_test_bench", "stripe_api_base": stripe_url}
    async with AsyncExitStack() as stack:
        tickets = await stack.enter_async_context(
            serve(build_tickets(_settings(TicketsSettings, mongo_url, "bench_tickets", nats_url)))
        )
        orders = await stack.enter_async_context(
            serve(build_orders(_settings(OrdersSettings, mongo_url, "bench_orders", nats_url)))
        )
        payments = await stack.enter_async_context(
            serve(
                build_payments(
                    _settings(PaymentsSettings, mongo_url, "bench_payments", nats_url, **stripe)
                )
            )
        )
        seller, buyer = bearer(), bearer()
        bus = await EventBus.connect(nats_url, name="bench", stream="TICKETING")
        stack.push_async_callback(bus.close)
        ticket_ids = []
        for i in range(purchases):
            made = await tickets.post(
                "/api/tickets", json={"title": f"t{i}", "price": 10}, headers=seller
            )
            ticket_ids.append(made.json()["id"])
        await _settled(bus)
        # Progress is read off the bus (consumer acks), so the counting sees only the services.
        commands.counting = True
        started = time.perf_counter()
        for ticket_id in ticket_ids:
            order = (
                await orders.post("/api/orders", json={"ticketId": ticket_id}, headers=buyer)
            ).json()
            await _on_bus(bus, "order.created", "id", order["id"])
            await _on_bus(bus, "ticket.updated", "orderId", order["id"])
            await _settled(bus)
            paid = await payments.post(
                "/api/payments",
                json={"orderId": order["id"], "token": "pm_card_visa"},
                headers=buyer,
            )
            assert paid.status_code == 201, paid.text
            await _on_bus(bus, "payment.created", "orderId", order["id"])
            await _settled(bus)
        # The relays' clean-up of what they published is part of the cost: wait for it.
        await _outboxes_empty(watcher, ["bench_tickets", "bench_orders", "bench_payments"])
        elapsed = time.perf_counter() - started
        commands.counting = False
    await watcher.close()
    total = sum(commands.counts.values())
    return {
        "per_purchase": total / purchases,
        "seconds": elapsed,
        **{f"cmd_{k}": v / purchases for k, v in commands.counts.items()},
    }


async def _outboxes_empty(client: Any, names: list[str]) -> None:
    """Wait until no document in these databases holds an event (published or not)."""
    while True:
        pending = 0
        for name in names:
            db = client[name]
            for collection in await db.list_collection_names():
                pending += await db[collection].count_documents({"outbox": {"$exists": True}})
        if not pending:
            return
        await asyncio.sleep(0.01)


async def _last(bus: Any, subject: str) -> Any:
    try:
        return await bus.js.get_last_msg(bus.stream, subject)
    except Exception:  # none yet
        return None


async def _on_bus(bus: Any, subject: str, field: str, value: str) -> None:
    """Wait until the last `subject` message on the stream has `field` = `value`."""
    while True:
        message = await _last(bus, subject)
        if message is not None and json.loads(message.data).get(field) == value:
            return
        await asyncio.sleep(0.005)


async def _settled(bus: Any) -> None:
    """Wait until every durable consumer has acked the last message of its subject."""
    while True:
        behind = 0
        for consumer in await bus.js.consumers_info(bus.stream):
            last = await _last(bus, consumer.config.filter_subject)
            floor = consumer.ack_floor.stream_seq if consumer.ack_floor else 0
            if consumer.num_ack_pending or (last is not None and floor < last.seq):
                behind += 1
        if not behind:
            return
        await asyncio.sleep(0.005)


def child(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    out: dict[str, Any] = {
        "sweep_ms": asyncio.run(_sweep_cost(args.mongo, sizes)),
        "listener_per_s": asyncio.run(_listener_rate(args.mongo, args.nats, args.events)),
        "purchase": asyncio.run(
            _purchase_commands(args.mongo, args.nats, args.stripe, args.purchases)
        ),
    }
    print(json.dumps(out))


# --- the parent: servers, trees, and the report ---------------------------------------------


def _tree_path(tree: Path) -> str:
    return os.pathsep.join(str(tree / p) for p in PACKAGES)


def _run_child(tree: Path, urls: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": _tree_path(tree)}
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--mongo",
        urls["mongo"],
        "--nats",
        urls["nats"],
        "--stripe",
        urls["stripe"],
        "--sizes",
        args.sizes,
        "--events",
        str(args.events),
        "--purchases",
        str(args.purchases),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measuring {tree} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--purchases", type=int, default=20)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--mongo")
    parser.add_argument("--nats")
    parser.add_argument("--stripe")
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from ticketing_common.embedded import free_port, start_mongo, start_nats, wait_for_port

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        baseline = root / "baseline"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(baseline), args.baseline],
            check=True,
            capture_output=True,
        )
        mongo = start_mongo(root / "mongo", free_port(), (root / "mongo.log").open("wb"))
        nats = start_nats(root / "nats", free_port(), (root / "nats.log").open("wb"))
        stripe_port = free_port()
        stripe = subprocess.Popen(
            [sys.executable, "-m", "fakestripe"],
            env={**os.environ, "HOST": "127.0.0.1", "PORT": str(stripe_port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(stripe_port, stripe, "fakestripe", 30)
            urls = {
                "mongo": mongo.url.rstrip("/"),
                "nats": nats.url,
                "stripe": f"http://127.0.0.1:{stripe_port}",
            }
            results = {
                "baseline": _run_child(baseline, urls, args),
                "this tree": _run_child(ROOT, urls, args),
            }
        finally:
            stripe.terminate()
            stripe.wait(10)
            nats.stop()
            mongo.stop()
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)],
                check=False,
                capture_output=True,
            )
    _report(results, args)


def _report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    base, this = results["baseline"], results["this tree"]
    sizes = args.sizes.split(",")
    print(f"event backbone: this tree vs baseline {args.baseline} (same run, same servers)")
    print(f"{'measure':<44}{'baseline':>12}{'this tree':>12}{'ratio':>9}")

    def row(name: str, b: float, t: float, unit: str) -> None:
        print(f"{name:<44}{b:>10.2f}{unit:<2}{t:>10.2f}{unit:<2}{t / b:>9.2f}")

    for size in sizes:
        sweep = (base["sweep_ms"][size], this["sweep_ms"][size])
        row(f"sweep, nothing pending, {int(size):,} docs (ms)", *sweep, "")
    first, last = sizes[0], sizes[-1]
    print(
        f"{'sweep growth ' + last + ' / ' + first:<44}"
        f"{base['sweep_ms'][last] / base['sweep_ms'][first]:>12.2f}"
        f"{this['sweep_ms'][last] / this['sweep_ms'][first]:>12.2f}"
    )
    row(
        "listener: ticket:created applied per s", base["listener_per_s"], this["listener_per_s"], ""
    )
    row(
        "db commands per purchase (order, pay, complete)",
        base["purchase"]["per_purchase"],
        this["purchase"]["per_purchase"],
        "",
    )
    names = sorted({k for r in (base, this) for k in r["purchase"] if k.startswith("cmd_")})
    for name in names:
        b, t = base["purchase"].get(name, 0.0), this["purchase"].get(name, 0.0)
        print(f"{'  ' + name[4:]:<44}{b:>12.2f}{t:>12.2f}")
    with (ROOT / "bench" / "event_backbone.json").open("w") as out:
        json.dump({"baseline_rev": args.baseline, **results}, out, indent=2)


if __name__ == "__main__":
    main()

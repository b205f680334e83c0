"""The outbox relay against real MongoDB-compatible storage and NATS JetStream.

Relays here publish through a gated bus: every publish waits until the test lets it through,
so the test, not the scheduler, decides how relays and writers interleave.
"""

import asyncio
import json
import random

import pytest
from bson import ObjectId

from ticketing_common.bus import EventBus
from ticketing_common.events import TicketCreated, TicketUpdated
from ticketing_common.mongo import connect, database
from ticketing_common.outbox import Outbox, OutboxRelay, add_events, with_events
from ticketing_common.testing import stream_messages


def _created(oid):
    return TicketCreated(id=str(oid), version=0, title="v0", price=10, userId="b" * 24)


def _updated(oid, version):
    return TicketUpdated(id=str(oid), version=version, title=f"v{version}", price=10, userId="u")


class GatedBus:
    """The real bus, but each publish waits at a gate the test opens."""

    def __init__(self, bus):
        self.bus = bus
        self.waiting: list[asyncio.Future] = []

    async def publish(self, subject, data, msg_id, **kwargs):
        gate = asyncio.get_running_loop().create_future()
        self.waiting.append(gate)
        await gate
        return await self.bus.publish(subject, data, msg_id, **kwargs)

    def open_one(self, rng=None):
        gate = self.waiting.pop(rng.randrange(len(self.waiting)) if rng else 0)
        gate.set_result(None)


async def settle(tasks, buses):
    """Wait until every task has finished or stands at a gate (a condition, not a delay);
    each task publishes one event at a time, so it stands at one gate at most."""
    while True:
        gated = sum(len(b.waiting) for b in buses)
        running = sum(not t.done() for t in tasks)
        if running == gated:
            return
        await asyncio.sleep(0)


@pytest.fixture
async def parts(mongo_uri, nats_url):
    mongo = connect(mongo_uri)
    bus = await EventBus.connect(nats_url, name="outbox-test", stream="TICKETING")
    yield database(mongo)["widgets"], bus
    await bus.close()
    await mongo.close()


async def _write(outbox, oid, version):
    """The next versioned change of `oid`, with its `ticket:updated`."""

    def decide(doc):
        return add_events(doc, {"$inc": {"version": 1}}, _updated(oid, doc["version"] + 1))

    doc, changed = await outbox.change(oid, decide)
    assert changed and doc["version"] == version


async def test_an_event_stored_before_a_crash_is_published_exactly_once(parts):
    widgets, bus = parts
    oid = ObjectId()
    # The process wrote the change and its event, then died before publishing.
    await widgets.insert_one(with_events({"_id": oid}, _created(oid)))

    assert await OutboxRelay(bus, [widgets]).sweep(older_than=0) == 1
    # A second relay (a restart, or another replica) finds nothing left to send.
    assert await OutboxRelay(bus, [widgets]).sweep(older_than=0) == 0

    messages = await stream_messages(bus)
    assert [(m["subject"], m["data"]["title"]) for m in messages] == [("ticket.created", "v0")]
    stored = await widgets.find_one({})
    assert "outbox" not in stored and "outboxAt" not in stored


async def test_a_crash_after_publishing_but_before_marking_sent_publishes_once(parts):
    widgets, bus = parts
    oid = ObjectId()
    doc = with_events({"_id": oid}, _created(oid))
    await widgets.insert_one(doc)
    ((event_id, entry),) = doc["outbox"].items()
    # Published, then the process died before removing the outbox entry.
    await bus.publish(entry["subject"], json.dumps(entry["data"]).encode(), event_id)

    assert await OutboxRelay(bus, [widgets]).sweep(older_than=0) == 1

    assert [m["msgId"] for m in await stream_messages(bus)] == [event_id]


async def test_the_sweep_leaves_young_events_to_their_writer(parts):
    widgets, bus = parts
    oid = ObjectId()
    await widgets.insert_one(with_events({"_id": oid}, _created(oid)))
    relay = OutboxRelay(bus, [widgets], grace_seconds=3600)
    assert await relay.sweep() == 0
    assert await relay.sweep(older_than=0) == 1


async def test_a_stale_relay_never_removes_an_event_it_did_not_publish(parts):
    """The race of two relays on one document, step by step.

    A reads {e1}; B publishes e1 and removes it; a writer adds e2; A publishes e1 again
    (dropped by its message id) and cleans up from its old read. e2 must survive that.
    """
    widgets, bus = parts
    oid = ObjectId()
    outbox = Outbox(widgets, None)
    await outbox.insert(with_events({"_id": oid, "version": 0}, _created(oid)))
    gated = GatedBus(bus)
    a, b = OutboxRelay(gated, [widgets]), OutboxRelay(bus, [widgets])

    stale = await widgets.find_one({"_id": oid})
    slow = asyncio.create_task(a.publish_doc(widgets, stale))
    await settle([slow], [gated])  # A holds its read, its publish not yet sent
    assert await b.sweep(older_than=0) == 1
    await _write(outbox, oid, 1)  # e2
    gated.open_one()
    await slow

    pending = await widgets.find_one({"_id": oid})
    assert [e["data"]["version"] for e in pending["outbox"].values()] == [1]
    assert await b.sweep(older_than=0) == 1
    messages = await stream_messages(bus)
    assert [(m["subject"], m["data"]["version"]) for m in messages] == [
        ("ticket.created", 0),
        ("ticket.updated", 1),
    ]


async def test_an_event_added_while_publishing_is_kept_and_sent_after(parts):
    widgets, bus = parts
    oid = ObjectId()
    outbox = Outbox(widgets, None)
    await outbox.insert(with_events({"_id": oid, "version": 0}, _created(oid)))
    for version in (1, 2):
        await _write(outbox, oid, version)
    gated = GatedBus(bus)
    relay = OutboxRelay(gated, [widgets])
    task = asyncio.create_task(relay.sweep(older_than=0))
    for _ in range(2):
        await settle([task], [gated])
        gated.open_one()
    await settle([task], [gated])
    await _write(outbox, oid, 3)  # lands between the relay's read and its clean-up
    gated.open_one()
    assert await task == 3
    assert await OutboxRelay(bus, [widgets]).sweep(older_than=0) == 1

    versions = [m["data"]["version"] for m in await stream_messages(bus)]
    assert versions == [0, 1, 2, 3]


@pytest.mark.parametrize("seed", range(6))
async def test_three_relays_and_writers_in_random_interleavings_lose_nothing(parts, seed):
    """Writers change documents while three relays, each at its own pace, publish them: every
    event reaches the bus once, and each document's events arrive in the order written."""
    widgets, bus = parts
    rng = random.Random(seed)
    outbox = Outbox(widgets, None)
    docs = [ObjectId() for _ in range(8)]
    versions = dict.fromkeys(docs, 0)
    for oid in docs:
        await outbox.insert(with_events({"_id": oid, "version": 0}, _created(oid)))
    buses = [GatedBus(bus) for _ in range(3)]
    relays = [OutboxRelay(gated, [widgets]) for gated in buses]
    tasks: list[asyncio.Task] = []

    for _ in range(150):
        action = rng.random()
        if action < 0.35:
            oid = rng.choice(docs)
            versions[oid] += 1
            await _write(outbox, oid, versions[oid])
        elif action < 0.6:
            relay = rng.choice(relays)
            oid = rng.choice(docs)
            read = await widgets.find_one({"_id": oid})
            if read.get("outbox"):
                tasks.append(asyncio.create_task(relay.publish_doc(widgets, read)))
        elif action < 0.7:  # a sweep: every pending document, each as its own task
            relay = rng.choice(relays)
            async for read in widgets.find({"outboxAt": {"$gt": 0}}):
                tasks.append(asyncio.create_task(relay.publish_doc(widgets, read)))
        else:
            ready = [b for b in buses if b.waiting]
            if ready:
                rng.choice(ready).open_one(rng)
        await settle(tasks, buses)

    while any(b.waiting for b in buses):
        rng.choice([b for b in buses if b.waiting]).open_one(rng)
        await settle(tasks, buses)
    await asyncio.gather(*tasks)
    await OutboxRelay(bus, [widgets]).sweep(older_than=0)

    assert await widgets.count_documents({"outboxAt": {"$gt": 0}}) == 0
    messages = await stream_messages(bus)
    assert len({m["msgId"] for m in messages}) == len(messages)  # repeats were dropped
    for oid in docs:
        seen = [m["data"]["version"] for m in messages if m["data"]["id"] == str(oid)]
        assert seen == list(range(versions[oid] + 1)), (oid, seen)


async def test_a_writer_publishes_its_events_without_waiting_for_a_sweep(parts):
    widgets, bus = parts
    relay = OutboxRelay(bus, [widgets], sweep_seconds=3600)
    await relay.start()
    try:
        oid = ObjectId()
        await Outbox(widgets, relay).insert(with_events({"_id": oid}, _created(oid)))
        await relay.drain()
        assert [m["data"]["id"] for m in await stream_messages(bus)] == [str(oid)]
        assert "outbox" not in await widgets.find_one({"_id": oid})
    finally:
        await relay.stop()

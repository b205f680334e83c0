"""The outbox relay against real MongoDB-compatible storage and NATS JetStream.

Relays here publish through a gated bus: every publish waits until the test lets it through,
so the test, not the scheduler, decides how relays and writers interleave. A relay removes what
it published only when it flushes, so the tests flush where the relay's timer would.
"""

import asyncio
import json
import random

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import AutoReconnect

from ticketing_common.bus import EventBus
from ticketing_common.events import TicketCreated, TicketUpdated
from ticketing_common.mongo import connect, database
from ticketing_common.outbox import Outbox, OutboxRelay, add_events, with_events
from ticketing_testing import eventually, stream_messages


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


class CountingBus:
    """The real bus, recording the message id of every publish (JetStream hides repeats)."""

    def __init__(self, bus):
        self.bus = bus
        self.sent: list[str] = []

    async def publish(self, subject, data, msg_id, **kwargs):
        self.sent.append(msg_id)
        return await self.bus.publish(subject, data, msg_id, **kwargs)


class FlakyWrites:
    """A collection whose next `failures` bulk writes fail as if the database were down."""

    def __init__(self, collection, failures):
        self.collection = collection
        self.failures = failures
        self.bulk_writes = 0

    async def bulk_write(self, *args, **kwargs):
        self.bulk_writes += 1
        if self.failures:
            self.failures -= 1
            raise AutoReconnect("the database is down")
        return await self.collection.bulk_write(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.collection, name)


class Updates(monitoring.CommandListener):
    """Every `update` command a client sends: how many statements it held, per collection."""

    def __init__(self):
        self.sent: list[tuple[str, int]] = []

    def started(self, event):
        if event.command_name == "update":
            self.sent.append((event.command["update"], len(event.command["updates"])))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


async def queued(relay, removals):
    """Wait until `relay` holds `removals` published documents waiting for their flush."""

    async def check():
        return relay.pending_removals == removals

    await eventually(check)


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

    first = OutboxRelay(bus, [widgets])
    assert await first.sweep(older_than=0) == 1
    assert await first.flush() == 1
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
    assert await b.flush() == 1
    await _write(outbox, oid, 1)  # e2
    gated.open_one()
    await slow
    assert await a.flush() == 1

    pending = await widgets.find_one({"_id": oid})
    assert [e["data"]["version"] for e in pending["outbox"].values()] == [1]
    assert await b.sweep(older_than=0) == 1
    assert await b.flush() == 1
    assert "outbox" not in await widgets.find_one({"_id": oid})
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
    assert await relay.flush() == 1
    pending = await widgets.find_one({"_id": oid})
    assert [e["data"]["version"] for e in pending["outbox"].values()] == [3]
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
            await relay.flush()  # as a sweep tick does, before it looks
            async for read in widgets.find({"outboxAt": {"$gt": 0}}):
                tasks.append(asyncio.create_task(relay.publish_doc(widgets, read)))
        else:
            ready = [b for b in buses if b.waiting]
            if ready:
                rng.choice(ready).open_one(rng)
        await settle(tasks, buses)
        if rng.random() < 0.2:  # a relay writes what it queued, however stale its reads
            await rng.choice(relays).flush()

    while any(b.waiting for b in buses):
        rng.choice([b for b in buses if b.waiting]).open_one(rng)
        await settle(tasks, buses)
    await asyncio.gather(*tasks)
    for relay in rng.sample(relays, len(relays)):
        await relay.flush()
    last = OutboxRelay(bus, [widgets])
    await last.sweep(older_than=0)
    await last.flush()

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


async def test_one_flush_removes_what_many_documents_published_in_one_command(mongo_uri, nats_url):
    updates = Updates()
    mongo = AsyncMongoClient(mongo_uri, event_listeners=[updates])
    bus = await EventBus.connect(nats_url, name="outbox-test", stream="TICKETING")
    try:
        widgets = database(mongo)["widgets"]
        relay = OutboxRelay(bus, [widgets], sweep_seconds=3600)
        outbox = Outbox(widgets, relay)
        docs = [with_events({"_id": oid}, _created(oid)) for oid in (ObjectId() for _ in range(50))]
        for doc in docs:
            await outbox.insert(doc)
        await queued(relay, len(docs))
        assert updates.sent == []  # publishing wrote nothing
        assert await widgets.count_documents({"outboxAt": {"$gt": 0}}) == len(docs)

        assert await relay.flush() == len(docs)

        assert updates.sent == [("widgets", 2 * len(docs))]
        assert await widgets.count_documents({"outboxAt": {"$gt": 0}}) == 0
        assert await widgets.count_documents({"outbox": {"$exists": True}}) == 0
        assert relay.pending_removals == 0
        assert await relay.flush() == 0 and len(updates.sent) == 1  # nothing left, no command
        messages = await stream_messages(bus)
        assert sorted(m["msgId"] for m in messages) == sorted(e for d in docs for e in d["outbox"])
    finally:
        await bus.close()
        await mongo.close()


async def test_a_document_written_again_before_the_flush_publishes_only_its_new_event(parts):
    widgets, bus = parts
    counting = CountingBus(bus)
    relay = OutboxRelay(counting, [widgets], sweep_seconds=3600)
    outbox = Outbox(widgets, relay)
    oid = ObjectId()
    first = with_events({"_id": oid, "version": 0}, _created(oid))
    await outbox.insert(first)
    await queued(relay, 1)
    await _write(outbox, oid, 1)  # handed over with both events in its outbox
    await queued(relay, 2)

    stored = await widgets.find_one({"_id": oid})
    assert len(stored["outbox"]) == 2  # the first event is still there, queued for removal
    (second,) = set(stored["outbox"]) - set(first["outbox"])
    assert counting.sent == [*first["outbox"], second]  # the first event went out once

    await relay.drain()
    assert relay.pending_removals == 0
    stored = await widgets.find_one({"_id": oid})
    assert "outbox" not in stored and "outboxAt" not in stored
    assert counting.sent == [*first["outbox"], second]
    versions = [m["data"]["version"] for m in await stream_messages(bus)]
    assert versions == [0, 1]


async def test_removals_that_cannot_be_written_wait_for_the_next_flush(parts):
    widgets, bus = parts
    flaky = FlakyWrites(widgets, failures=2)
    counting = CountingBus(bus)
    relay = OutboxRelay(counting, [flaky], sweep_seconds=3600)
    oid = ObjectId()
    doc = with_events({"_id": oid}, _created(oid))
    await Outbox(flaky, relay).insert(doc)
    await queued(relay, 1)

    assert await relay.flush() == 0  # the database is down
    assert flaky.bulk_writes == 1 and relay.pending_removals == 1
    assert (await widgets.find_one({"_id": oid}))["outbox"].keys() == doc["outbox"].keys()
    # A sweep while it is still down finds the document but does not publish it again.
    assert await relay.sweep(older_than=0) == 0
    assert flaky.bulk_writes == 2 and relay.pending_removals == 2
    assert counting.sent == list(doc["outbox"])

    assert await relay.flush() == 2  # back up: what was kept is written
    assert relay.pending_removals == 0
    stored = await widgets.find_one({"_id": oid})
    assert "outbox" not in stored and "outboxAt" not in stored
    assert counting.sent == list(doc["outbox"])
    assert [m["msgId"] for m in await stream_messages(bus)] == list(doc["outbox"])


async def test_removals_are_written_at_once_when_many_wait(parts):
    widgets, bus = parts
    relay = OutboxRelay(bus, [widgets], sweep_seconds=3600, flush_at=3)
    outbox = Outbox(widgets, relay)
    oids = [ObjectId() for _ in range(3)]
    for oid in oids[:2]:
        await outbox.insert(with_events({"_id": oid}, _created(oid)))
    await queued(relay, 2)
    assert await widgets.count_documents({"outbox": {"$exists": True}}) == 2

    await outbox.insert(with_events({"_id": oids[2]}, _created(oids[2])))

    async def all_removed():
        return await widgets.count_documents({"outbox": {"$exists": True}}) == 0

    await eventually(all_removed)
    assert relay.pending_removals == 0


async def test_a_stopped_relay_leaves_nothing_it_published_in_the_documents(parts):
    widgets, bus = parts
    relay = OutboxRelay(bus, [widgets], sweep_seconds=3600)
    await relay.start()
    handed, left = ObjectId(), ObjectId()
    await Outbox(widgets, relay).insert(with_events({"_id": handed}, _created(handed)))
    await queued(relay, 1)
    # Left by a writer that died: only the final sweep on the way out publishes it.
    await widgets.insert_one(with_events({"_id": left}, _created(left)))

    await relay.stop()

    assert relay.pending_removals == 0
    assert await widgets.count_documents({"outbox": {"$exists": True}}) == 0
    assert sorted(m["data"]["id"] for m in await stream_messages(bus)) == sorted(
        [str(handed), str(left)]
    )

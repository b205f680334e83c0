"""The outbox relay against real MongoDB-compatible storage and NATS JetStream."""

import asyncio
import json

import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from ticketing_common.bus import EventBus
from ticketing_common.events import TicketCreated, TicketUpdated
from ticketing_common.mongo import connect, database, update_versioned
from ticketing_common.outbox import OutboxRelay, add_events, with_events


def _ticket_event(version=0, title="concert"):
    return TicketCreated(id="a" * 24, version=version, title=title, price=10, userId="b" * 24)


async def _stream_messages(bus, subject="ticket.*"):
    sub = await bus.js.pull_subscribe(
        subject, stream=bus.stream, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    )
    info = await bus.js.stream_info(bus.stream)
    messages = []
    if info.state.messages:
        messages = await sub.fetch(info.state.messages, timeout=2)
    await sub.unsubscribe()
    return [(m.subject, json.loads(m.data), m.headers.get("Nats-Msg-Id")) for m in messages]


@pytest.fixture
async def parts(mongo_uri, nats_url):
    mongo = connect(mongo_uri)
    bus = await EventBus.connect(nats_url, name="outbox-test", stream="TICKETING")
    yield database(mongo)["widgets"], bus
    await bus.close()
    await mongo.close()


async def test_an_event_stored_before_a_crash_is_published_exactly_once(parts):
    widgets, bus = parts
    # The process wrote the change and its event, then died before publishing.
    await widgets.insert_one(with_events({"name": "w"}, _ticket_event()))

    first = OutboxRelay(bus, [widgets])
    assert await first.publish_pending() == 1
    # A second relay (a restart, or another replica) finds nothing left to send.
    assert await OutboxRelay(bus, [widgets]).publish_pending() == 0

    messages = await _stream_messages(bus)
    assert [(s, d["title"]) for s, d, _ in messages] == [("ticket.created", "concert")]
    stored = await widgets.find_one({})
    assert "outbox" not in stored and "outboxRev" not in stored


async def test_a_crash_after_publishing_but_before_marking_sent_publishes_once(parts):
    widgets, bus = parts
    doc = with_events({"name": "w"}, _ticket_event())
    await widgets.insert_one(doc)
    ((event_id, entry),) = doc["outbox"].items()
    # Published, then the process died before removing the outbox entry.
    await bus.publish(entry["subject"], json.dumps(entry["data"]).encode(), event_id)

    await OutboxRelay(bus, [widgets]).publish_pending()

    messages = await _stream_messages(bus)
    assert len(messages) == 1
    assert messages[0][2] == event_id


async def test_events_keep_their_order_and_one_added_meanwhile_is_not_lost(parts):
    widgets, bus = parts
    created = await widgets.insert_one(with_events({"version": 0}, _ticket_event(0)))
    for version in (1, 2):
        updated = TicketUpdated(
            id="a" * 24, version=version, title=f"v{version}", price=10, userId="b" * 24
        )
        assert await update_versioned(
            widgets, created.inserted_id, version - 1, add_events({"$set": {}}, updated)
        )
    relay = OutboxRelay(bus, [widgets])
    pending = await widgets.find_one({})
    # Another write lands between the relay's read and its clean-up.
    late = TicketUpdated(id="a" * 24, version=3, title="v3", price=10, userId="b" * 24)
    await update_versioned(widgets, created.inserted_id, 2, add_events({"$set": {}}, late))
    await relay._publish_doc(widgets, pending)  # sends v0..v2; its clean-up must not drop v3
    assert await widgets.count_documents({"outbox": {"$exists": True}}) == 1
    await relay.publish_pending()

    versions = [d["version"] for _, d, _ in await _stream_messages(bus)]
    assert versions == [0, 1, 2, 3]


async def test_the_relay_publishes_soon_after_a_kick(parts):
    widgets, bus = parts
    relay = OutboxRelay(bus, [widgets], sweep_seconds=3600)
    relay.start()
    try:
        await widgets.insert_one(with_events({"name": "w"}, _ticket_event()))
        relay.kick()
        for _ in range(200):
            if await widgets.count_documents({"outbox": {"$exists": True}}) == 0:
                break
            await asyncio.sleep(0.02)
        assert len(await _stream_messages(bus)) == 1
    finally:
        await relay.stop()

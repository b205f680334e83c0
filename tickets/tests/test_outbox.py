"""Events survive a crash: a change stored with its event is published, exactly once."""

import json

from bson import ObjectId

from ticketing_common.events import TicketCreated
from ticketing_common.outbox import with_events
from ticketing_testing import eventually, stream_messages


async def store_unpublished_ticket(db):
    """A ticket as a process that died right after the write left it: event still pending."""
    oid = ObjectId()
    event = TicketCreated(id=str(oid), version=0, title="concert", price=20, userId="u1")
    doc = {"_id": oid, "title": "concert", "price": 20.0, "userId": "u1", "version": 0, "rev": 0}
    await db["tickets"].insert_one(with_events(doc, event))
    (event_id,) = (await db["tickets"].find_one({"_id": oid}))["outbox"]
    return oid, event, event_id


async def published_once(bus, db, oid):
    """The stream's messages about ticket `oid`, once its outbox is emptied."""
    messages = await stream_messages(bus, "ticket.created")
    events = [m for m in messages if m["data"]["id"] == str(oid)]
    sent = "outbox" not in await db["tickets"].find_one({"_id": oid})
    return events if sent and events else None


async def test_a_pending_event_is_published_once_the_service_starts(start, db, bus, published):
    oid, event, event_id = await store_unpublished_ticket(db)
    async with start() as client:
        events = await eventually(lambda: published_once(bus, db, oid))
        assert [e["data"] for e in events] == [event.payload()]
        assert events[0]["msgId"] == event_id
        assert (await client.get(f"/api/tickets/{oid}")).json()["version"] == 0
    async with start():  # a restart sends nothing again
        pass
    assert len(await published("ticket.created")) == 1


async def test_an_event_published_before_the_crash_is_not_published_twice(
    start, db, bus, published
):
    oid, event, event_id = await store_unpublished_ticket(db)
    # The relay had published it, then died before marking it sent.
    data = json.dumps(event.payload(), separators=(",", ":")).encode()
    await bus.publish(str(event.subject), data, event_id)
    async with start():
        await eventually(lambda: published_once(bus, db, oid))
    assert await published("ticket.created") == [event.payload()]


async def test_events_stored_just_before_shutdown_still_go_out(start, signin, published):
    async with start() as client:
        response = await client.post(
            "/api/tickets", json={"title": "concert", "price": 20}, headers=signin()
        )
        ticket = response.json()
    # Stopped at once: the relay's last pass on the way out sent it.
    assert [e["id"] for e in await published("ticket.created")] == [ticket["id"]]

"""`ticket:created` (the original's ticket-created-listener.test), on the real bus."""

from bson import ObjectId

from ticketing_common.events import TicketCreated
from ticketing_testing import eventually


def _event(**changes):
    values = {
        "id": str(ObjectId()),
        "version": 0,
        "title": "concert",
        "price": 10,
        "userId": str(ObjectId()),
        **changes,
    }
    return TicketCreated(**values)


async def _replica(db, ticket_id):
    return await db["tickets"].find_one({"_id": ObjectId(ticket_id)})


async def test_creates_and_saves_a_ticket(client, publish, db):
    event = _event(title="concert", price=10)

    await publish(event)

    ticket = await eventually(lambda: _replica(db, event.id))
    assert ticket == {"_id": ObjectId(event.id), "title": "concert", "price": 10, "version": 0}


async def test_acks_the_message(client, publish, acked):
    seq = await publish(_event())
    assert await eventually(lambda: acked("ticket.created", seq))


async def test_a_replayed_event_changes_nothing(client, publish, acked, db):
    event = _event(title="first")
    await publish(event)
    await eventually(lambda: _replica(db, event.id))

    await publish(event)  # the same event again, under a new message id
    seq = await publish(_event(id=event.id, title="second"))

    assert await eventually(lambda: acked("ticket.created", seq))
    assert await db["tickets"].count_documents({}) == 1
    assert (await _replica(db, event.id))["title"] == "first"


async def test_a_replicated_ticket_can_be_ordered(client, publish, db, signin):
    event = _event()
    await publish(event)
    await eventually(lambda: _replica(db, event.id))

    response = await client.post("/api/orders", json={"ticketId": event.id}, headers=signin())

    assert response.status_code == 201
    assert response.json()["ticket"] == {
        "id": event.id,
        "title": "concert",
        "price": 10,
        "version": 0,
    }

"""`ticket:updated` (the original's ticket-updated-listener.test), on the real bus."""

from bson import ObjectId

from ticketing_common.deadletters import dead_letters
from ticketing_common.events import TicketCreated, TicketUpdated
from ticketing_testing import eventually

DURABLE = "orders-ticket-updated"


def _updated(ticket, version, **changes):
    values = {
        "id": str(ticket["_id"]),
        "version": version,
        "title": f"{ticket['title']} v{version}",
        "price": ticket["price"] + version,
        "userId": str(ObjectId()),
        **changes,
    }
    return TicketUpdated(**values)


async def _replica(db, ticket):
    return await db["tickets"].find_one({"_id": ticket["_id"]})


async def _at_version(db, ticket, version):
    doc = await _replica(db, ticket)
    return doc if doc is not None and doc["version"] == version else None


async def test_finds_updates_and_saves_a_ticket(client, publish, new_ticket, db):
    ticket = await new_ticket(title="concert", price=10)

    await publish(_updated(ticket, 1, title="new concert", price=999, orderId=str(ObjectId())))

    doc = await eventually(lambda: _at_version(db, ticket, 1))
    assert doc == {"_id": ticket["_id"], "title": "new concert", "price": 999, "version": 1}


async def test_acks_the_message(client, publish, new_ticket, acked):
    ticket = await new_ticket()
    seq = await publish(_updated(ticket, 1))
    assert await eventually(lambda: acked("ticket.updated", seq))


async def test_does_not_ack_an_event_with_a_skipped_version(start, publish, new_ticket, db, bus):
    ticket = await new_ticket(title="concert", price=10)
    # Enough deliveries that the waiting event cannot become a dead letter during the test.
    async with start(listener_max_deliver=1000):
        seq_two = await publish(_updated(ticket, 2))

        async def redelivered():
            info = await bus.js.consumer_info(bus.stream, DURABLE)
            return info.num_redelivered >= 1 and info.ack_floor.stream_seq < seq_two

        assert await eventually(redelivered)
        assert await _replica(db, ticket) == ticket  # version 2 did not land on version 0

        await publish(_updated(ticket, 1))

        doc = await eventually(lambda: _at_version(db, ticket, 2))
        assert doc["title"] == "concert v2"
        assert doc["price"] == 12


async def test_an_older_or_equal_version_is_acked_and_ignored(
    client, publish, new_ticket, db, acked
):
    ticket = await new_ticket(title="concert", price=10)
    await publish(_updated(ticket, 1))
    await publish(_updated(ticket, 2))
    await eventually(lambda: _at_version(db, ticket, 2))

    await publish(_updated(ticket, 1, title="stale"))
    seq = await publish(_updated(ticket, 2, title="replayed"))

    assert await eventually(lambda: acked("ticket.updated", seq))
    doc = await _replica(db, ticket)
    assert doc["version"] == 2
    assert doc["title"] == "concert v2"


async def test_an_update_waits_for_the_ticket_to_be_created(start, publish, db):
    ticket = {"_id": ObjectId(), "title": "late", "price": 5}
    async with start(listener_max_deliver=1000):
        await publish(_updated(ticket, 1))
        await publish(
            TicketCreated(
                id=str(ticket["_id"]), version=0, title="late", price=5, userId=str(ObjectId())
            )
        )
        doc = await eventually(lambda: _at_version(db, ticket, 1))
    assert doc["title"] == "late v1"


async def test_a_gap_that_never_closes_ends_as_a_dead_letter(client, publish, new_ticket, db, bus):
    ticket = await new_ticket()
    await publish(_updated(ticket, 5))

    (letter,) = await eventually(lambda: dead_letters(bus, "orders"))

    assert letter["subject"] == "ticket.updated"
    assert letter["consumer"] == DURABLE
    assert await _replica(db, ticket) == ticket

"""The order listeners (the original's order-created- and order-cancelled-listener.test.ts).

Events go onto the real bus as the orders service would publish them; the effects are
awaited with `eventually`, and "acks the message" is read from the service's durable consumer.
"""

from bson import ObjectId

from ticketing_common.deadletters import dead_letters
from ticketing_testing import eventually

TICKETS = "/api/tickets"


async def ticket_state(db, ticket):
    return await db["tickets"].find_one({"_id": ObjectId(ticket["id"])})


async def nothing_new_stored(db, ticket, version):
    """No change and no new event: any event would have been stored with the change, with a
    version past `version` (an earlier one may wait in the outbox for its batched removal)."""
    doc = await ticket_state(db, ticket)
    pending = [
        e
        for e in (doc.get("outbox") or {}).values()
        if e["subject"] == "ticket.updated" and e["data"]["version"] > version
    ]
    return doc["version"] == version and not pending


async def reserved(client, publish, acked, new_ticket, order_created):
    """A ticket reserved through the bus, its order event, and that event's stream seq."""
    ticket = await new_ticket()
    event = order_created(ticket)
    seq = await publish(event)
    await eventually(lambda: acked("order.created", seq))
    return ticket, event


# --- order:created ----------------------------------------------------------------------------


async def test_order_created_sets_the_order_id_of_the_ticket(
    client, new_ticket, publish, order_created
):
    ticket = await new_ticket()
    event = order_created(ticket)
    await publish(event)

    async def updated():
        shown = (await client.get(f"{TICKETS}/{ticket['id']}")).json()
        return shown if shown.get("orderId") == event.id else None

    shown = await eventually(updated)
    assert shown == {**ticket, "orderId": event.id, "version": 1}
    assert (await client.get(TICKETS)).json() == []  # reserved tickets are not listed


async def test_order_created_acks_the_message(client, new_ticket, publish, acked, order_created):
    ticket = await new_ticket()
    seq = await publish(order_created(ticket))
    await eventually(lambda: acked("order.created", seq))


async def test_order_created_publishes_a_ticket_updated_event(
    client, new_ticket, publish, published, order_created
):
    ticket = await new_ticket()
    event = order_created(ticket)
    await publish(event)
    events = await eventually(lambda: published("ticket.updated"))
    assert events == [
        {
            "id": ticket["id"],
            "version": 1,
            "title": ticket["title"],
            "price": ticket["price"],
            "userId": ticket["userId"],
            "orderId": event.id,
        }
    ]


async def test_a_redelivered_order_created_changes_nothing_and_emits_nothing(
    client, db, new_ticket, publish, acked, published, order_created
):
    ticket, event = await reserved(client, publish, acked, new_ticket, order_created)
    await eventually(lambda: published("ticket.updated"))
    again = await publish(event)  # the same event, as a redelivery would bring it
    await eventually(lambda: acked("order.created", again))
    assert await nothing_new_stored(db, ticket, 1)
    assert len(await published("ticket.updated")) == 1


async def test_an_order_created_for_an_unknown_ticket_becomes_a_dead_letter(
    client, bus, publish, acked, order_created
):
    ghost = {"id": str(ObjectId()), "price": 10}
    seq = await publish(order_created(ghost))

    async def dead():
        return [d for d in await dead_letters(bus, "tickets") if d["streamSeq"] == seq]

    letters = await eventually(dead)
    assert letters[0]["subject"] == "order.created"
    assert "Ticket not found" in letters[0]["error"]
    assert letters[0]["deliveries"] == 5
    await eventually(lambda: acked("order.created", seq))  # terminated: not redelivered


async def test_a_late_order_created_of_a_cancelled_order_reserves_nothing(
    client, db, new_ticket, publish, acked, published, order_created, order_cancelled
):
    ticket = await new_ticket()
    order_id = str(ObjectId())
    cancelled = await publish(order_cancelled(ticket, order_id))
    await eventually(lambda: acked("order.cancelled", cancelled))
    created = await publish(order_created(ticket, order_id))
    await eventually(lambda: acked("order.created", created))
    shown = (await client.get(f"{TICKETS}/{ticket['id']}")).json()
    assert shown == ticket
    assert await nothing_new_stored(db, ticket, 0)
    assert await published("ticket.updated") == []


# --- order:cancelled --------------------------------------------------------------------------


async def test_order_cancelled_updates_the_ticket_publishes_an_event_and_acks_the_message(
    client, new_ticket, publish, acked, published, order_created, order_cancelled
):
    ticket, created = await reserved(client, publish, acked, new_ticket, order_created)
    seq = await publish(order_cancelled(ticket, created.id))

    async def released():
        shown = (await client.get(f"{TICKETS}/{ticket['id']}")).json()
        return shown if shown["version"] == 2 else None

    shown = await eventually(released)
    assert shown == {**ticket, "version": 2}  # no orderId key at all
    assert (await client.get(TICKETS)).json() == [shown]  # listed again

    async def two_updates():
        events = await published("ticket.updated")
        return events if len(events) == 2 else None

    events = await eventually(two_updates)
    assert events[1] == {
        "id": ticket["id"],
        "version": 2,
        "title": ticket["title"],
        "price": ticket["price"],
        "userId": ticket["userId"],
    }
    await eventually(lambda: acked("order.cancelled", seq))


async def test_cancelling_a_different_order_does_not_clear_the_order_id(
    client, db, new_ticket, publish, acked, published, order_created, order_cancelled
):
    ticket, created = await reserved(client, publish, acked, new_ticket, order_created)
    seq = await publish(order_cancelled(ticket, str(ObjectId())))
    await eventually(lambda: acked("order.cancelled", seq))
    shown = (await client.get(f"{TICKETS}/{ticket['id']}")).json()
    assert shown["orderId"] == created.id
    assert shown["version"] == 1
    assert await nothing_new_stored(db, ticket, 1)


async def test_a_redelivered_order_cancelled_changes_nothing_and_emits_nothing(
    client, db, new_ticket, publish, acked, published, order_created, order_cancelled
):
    ticket, created = await reserved(client, publish, acked, new_ticket, order_created)
    event = order_cancelled(ticket, created.id)
    first = await publish(event)
    await eventually(lambda: acked("order.cancelled", first))

    async def two_updates():
        events = await published("ticket.updated")
        return events if len(events) == 2 else None

    await eventually(two_updates)
    again = await publish(event)
    await eventually(lambda: acked("order.cancelled", again))
    # Nor may the order's own `order:created`, delivered once more, reserve the ticket again.
    replay = await publish(created)
    await eventually(lambda: acked("order.created", replay))
    assert await nothing_new_stored(db, ticket, 2)
    assert "orderId" not in (await client.get(f"{TICKETS}/{ticket['id']}")).json()
    assert len(await published("ticket.updated")) == 2


async def test_the_ticket_can_be_reserved_again_after_a_cancellation(
    client, new_ticket, publish, acked, published, order_created, order_cancelled
):
    ticket, first = await reserved(client, publish, acked, new_ticket, order_created)
    seq = await publish(order_cancelled(ticket, first.id))
    await eventually(lambda: acked("order.cancelled", seq))
    second = order_created(ticket)
    seq = await publish(second)
    await eventually(lambda: acked("order.created", seq))
    shown = (await client.get(f"{TICKETS}/{ticket['id']}")).json()
    assert shown["orderId"] == second.id
    assert shown["version"] == 3


async def test_a_new_order_waits_for_the_cancellation_of_the_order_holding_the_ticket(
    client, publish, acked, bus, new_ticket, order_created, order_cancelled, db
):
    """The next buyer's `order:created` can arrive before the previous buyer's
    `order:cancelled` (they come through different consumers): it must not be dropped, or the
    late cancellation would free the ticket of a live order."""
    ticket, first = await reserved(client, publish, acked, new_ticket, order_created)
    second = order_created(ticket)
    seq = await publish(second)

    async def refused_once():
        info = await bus.js.consumer_info(bus.stream, "tickets-order-created")
        return info.num_redelivered >= 1

    await eventually(refused_once)  # tried, and left for later: the ticket is still held
    assert (await ticket_state(db, ticket))["orderId"] == first.id
    await publish(order_cancelled(ticket, first.id))

    async def held_by_second():
        doc = await ticket_state(db, ticket)
        return doc if doc.get("orderId") == second.id else None

    doc = await eventually(held_by_second)
    assert doc["version"] == 3  # reserved, released, reserved again
    assert await eventually(lambda: acked("order.created", seq))

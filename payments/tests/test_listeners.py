"""The order replica, fed by the real bus: the original listener tests and version order."""

from datetime import UTC, datetime, timedelta

from ticketing_common.deadletters import dead_letters
from ticketing_common.events import OrderCancelled, OrderCreated, OrderStatus
from ticketing_testing import eventually

from .support import new_id


def created(order_id=None, version=0, price=10.5):
    return OrderCreated(
        id=order_id or new_id(),
        version=version,
        status=OrderStatus.CREATED,
        userId=new_id(),
        expiresAt=datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=15),
        ticket={"id": new_id(), "price": price},
    )


def cancelled(order_id, version=1):
    return OrderCancelled(id=order_id, version=version, ticket={"id": new_id()})


async def found(db, order_id, **match):
    from bson import ObjectId

    return await db["orders"].find_one({"_id": ObjectId(order_id), **match})


# --- order-created-listener (original) -------------------------------------------------------


async def test_order_created_replicates_the_order_info(client, db, publish):
    event = created(price=12.34)
    await publish(event)
    order = await eventually(lambda: found(db, event.id))
    assert order["price"] == 12.34
    assert order["status"] == "created"
    assert order["userId"] == event.userId
    assert order["version"] == 0
    assert order["expiresAt"] == event.expiresAt


async def test_order_created_acks_the_message(client, publish, acked):
    seq = await publish(created())
    await eventually(lambda: acked("order.created", seq))


async def test_a_repeated_order_created_is_acked_and_ignored(client, db, publish, acked):
    event = created()
    await publish(event)
    await eventually(lambda: found(db, event.id))
    await db["orders"].update_one({"_id": (await found(db, event.id))["_id"]}, {"$set": {"x": 1}})
    seq = await publish(event)  # another msg id: JetStream keeps it
    await eventually(lambda: acked("order.created", seq))
    assert await db["orders"].count_documents({}) == 1
    assert (await found(db, event.id))["x"] == 1


# --- order-cancelled-listener (original, plus version order) ------------------------------------


async def test_order_cancelled_updates_the_status_of_the_order(client, db, publish):
    event = created()
    await publish(event)
    await eventually(lambda: found(db, event.id))
    await publish(cancelled(event.id))
    order = await eventually(lambda: found(db, event.id, status="cancelled"))
    assert order["version"] == 1


async def test_order_cancelled_acks_the_message(client, db, publish, acked):
    event = created()
    await publish(event)
    await eventually(lambda: found(db, event.id))
    seq = await publish(cancelled(event.id))
    await eventually(lambda: acked("order.cancelled", seq))


async def test_a_skipped_version_is_not_acked(client, db, bus, publish):
    event = created()
    await publish(event)
    await eventually(lambda: found(db, event.id))
    seq = await publish(cancelled(event.id, version=2))  # version 1 never came
    # Redelivered until the bound, then a dead letter: it was never acked or applied.
    (record,) = await eventually(lambda: dead_letters(bus, "payments"))
    assert record["subject"] == "order.cancelled"
    assert record["streamSeq"] == seq
    assert record["deliveries"] == 5
    order = await found(db, event.id)
    assert (order["status"], order["version"]) == ("created", 0)


async def test_a_cancel_that_overtakes_its_order_waits_for_it(client, db, bus, publish):
    order_id = new_id()
    await publish(cancelled(order_id))
    await publish(created(order_id))
    order = await eventually(lambda: found(db, order_id, status="cancelled"))
    assert order["version"] == 1
    assert await dead_letters(bus, "payments") == []


async def test_an_old_or_repeated_cancel_is_acked_and_ignored(client, db, publish, acked):
    event = created()
    await publish(event)
    await eventually(lambda: found(db, event.id))
    await publish(cancelled(event.id))
    await eventually(lambda: found(db, event.id, status="cancelled"))
    seq = await publish(cancelled(event.id))
    await eventually(lambda: acked("order.cancelled", seq))
    assert (await found(db, event.id))["version"] == 1

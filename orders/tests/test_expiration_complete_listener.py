"""`expiration:complete` (the original's expiration-complete-listener.test), on the real bus."""

import pytest
from bson import ObjectId

from ticketing_common.deadletters import dead_letters
from ticketing_common.events import ExpirationComplete
from ticketing_testing import eventually

from .support import stored_order

URL = "/api/orders"


async def _with_status(db, order, status):
    doc = await stored_order(db, order)
    return doc if doc["status"] == status else None


async def test_updates_the_order_status_to_cancelled(client, publish, order, db):
    await publish(ExpirationComplete(orderId=order["id"]))

    doc = await eventually(lambda: _with_status(db, order, "cancelled"))

    assert doc["version"] == 1
    assert "activeTicketId" not in doc
    shown = await client.get(f"{URL}/{order['id']}", headers=order["headers"])
    assert shown.json()["status"] == "cancelled"


async def test_emits_an_order_cancelled_event(client, publish, order, published):
    await publish(ExpirationComplete(orderId=order["id"]))

    (event,) = await eventually(lambda: published("order.cancelled"))

    assert event == {"id": order["id"], "version": 1, "ticket": {"id": order["ticket"]["id"]}}


async def test_acks_the_message(client, publish, order, acked):
    seq = await publish(ExpirationComplete(orderId=order["id"]))
    assert await eventually(lambda: acked("expiration.complete", seq))


async def test_cancels_an_order_awaiting_payment(client, publish, order, db):
    await db["orders"].update_one(
        {"_id": ObjectId(order["id"])}, {"$set": {"status": "awaiting:payment"}}
    )
    await publish(ExpirationComplete(orderId=order["id"]))
    await eventually(lambda: _with_status(db, order, "cancelled"))


@pytest.mark.parametrize("status", ["complete", "cancelled"])
async def test_does_nothing_for_a_complete_or_cancelled_order(
    client, publish, order, db, acked, published, status
):
    await db["orders"].update_one({"_id": ObjectId(order["id"])}, {"$set": {"status": status}})
    before = await stored_order(db, order)

    seq = await publish(ExpirationComplete(orderId=order["id"]))

    assert await eventually(lambda: acked("expiration.complete", seq))
    assert await stored_order(db, order) == before
    assert await published("order.cancelled") == []


async def test_a_replayed_expiration_changes_nothing(client, publish, order, db, acked, published):
    await publish(ExpirationComplete(orderId=order["id"]))
    await eventually(lambda: _with_status(db, order, "cancelled"))

    seq = await publish(ExpirationComplete(orderId=order["id"]))

    assert await eventually(lambda: acked("expiration.complete", seq))
    assert (await stored_order(db, order))["version"] == 1
    await eventually(lambda: published("order.cancelled"))
    assert len(await published("order.cancelled")) == 1


async def test_an_expired_order_frees_its_ticket(client, publish, order, db, signin):
    await publish(ExpirationComplete(orderId=order["id"]))
    await eventually(lambda: _with_status(db, order, "cancelled"))

    response = await client.post(URL, json={"ticketId": order["ticket"]["id"]}, headers=signin())

    assert response.status_code == 201


async def test_an_unknown_order_ends_as_a_dead_letter(client, publish, bus):
    order_id = str(ObjectId())
    await publish(ExpirationComplete(orderId=order_id))

    (letter,) = await eventually(lambda: dead_letters(bus, "orders"))

    assert letter["subject"] == "expiration.complete"
    assert order_id in letter["data"]
    assert "not found" in letter["error"]

"""DELETE /api/orders/{id} (the original's delete.test, plus the [fix]es)."""

import pytest
from bson import ObjectId

from ticketing_testing import eventually

URL = "/api/orders"


async def _order(client, new_ticket, user):
    ticket = await new_ticket()
    response = await client.post(URL, json={"ticketId": str(ticket["_id"])}, headers=user)
    assert response.status_code == 201
    return response.json()


async def test_marks_an_order_as_cancelled(client, signin, new_ticket):
    user = signin()
    order = await _order(client, new_ticket, user)

    response = await client.delete(f"{URL}/{order['id']}", headers=user)

    assert response.status_code == 204
    assert response.content == b""
    updated = (await client.get(f"{URL}/{order['id']}", headers=user)).json()
    assert updated["status"] == "cancelled"
    assert updated["version"] == 1


async def test_emits_an_order_cancelled_event(client, signin, new_ticket, published):
    user = signin()
    order = await _order(client, new_ticket, user)

    await client.delete(f"{URL}/{order['id']}", headers=user)

    (event,) = await eventually(lambda: published("order.cancelled"))
    assert event == {"id": order["id"], "version": 1, "ticket": {"id": order["ticket"]["id"]}}


async def test_a_completed_order_cannot_be_cancelled(client, signin, new_ticket, db):
    user = signin()
    order = await _order(client, new_ticket, user)
    await db["orders"].update_one({"_id": ObjectId(order["id"])}, {"$set": {"status": "complete"}})

    response = await client.delete(f"{URL}/{order['id']}", headers=user)

    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Cannot cancel a completed order"}]}
    assert (await client.get(f"{URL}/{order['id']}", headers=user)).json()["status"] == "complete"


async def test_cancelling_twice_is_a_204_without_a_new_event(
    client, signin, new_ticket, published, db
):
    user = signin()
    order = await _order(client, new_ticket, user)
    assert (await client.delete(f"{URL}/{order['id']}", headers=user)).status_code == 204
    await eventually(lambda: published("order.cancelled"))
    # Wait until the relay has sent it, so a second event could not hide in the outbox.
    await eventually(lambda: _no_outbox(db, order["id"]))

    again = await client.delete(f"{URL}/{order['id']}", headers=user)

    assert again.status_code == 204
    stored = await db["orders"].find_one({"_id": ObjectId(order["id"])})
    assert stored["version"] == 1
    assert "outbox" not in stored  # nothing new waits to go out...
    assert len(await published("order.cancelled")) == 1  # ...and nothing new went out


async def _no_outbox(db, order_id):
    doc = await db["orders"].find_one({"_id": ObjectId(order_id)})
    return "outbox" not in doc


async def test_one_cannot_cancel_another_users_order(client, signin, new_ticket):
    order = await _order(client, new_ticket, signin())

    response = await client.delete(f"{URL}/{order['id']}", headers=signin())

    assert response.status_code == 401
    assert response.json() == {"errors": [{"message": "Not authorized"}]}


@pytest.mark.parametrize("order_id", [str(ObjectId()), "not-an-id"])
async def test_an_unknown_order_is_not_found(client, signin, order_id):
    response = await client.delete(f"{URL}/{order_id}", headers=signin())
    assert response.status_code == 404
    assert response.json() == {"errors": [{"message": "Not Found"}]}


async def test_an_order_awaiting_payment_can_be_cancelled(client, signin, new_ticket, db):
    user = signin()
    order = await _order(client, new_ticket, user)
    await db["orders"].update_one(
        {"_id": ObjectId(order["id"])}, {"$set": {"status": "awaiting:payment"}}
    )
    assert (await client.delete(f"{URL}/{order['id']}", headers=user)).status_code == 204
    assert (await client.get(f"{URL}/{order['id']}", headers=user)).json()["status"] == "cancelled"

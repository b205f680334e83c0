"""`payment:created`: the order is paid, once."""

from bson import ObjectId

from ticketing_common.deadletters import dead_letters
from ticketing_common.events import PaymentCreated, PaymentRefunded
from ticketing_testing import eventually

from .support import stored_order

URL = "/api/orders"
RESERVED = {"errors": [{"message": "Ticket is already reserved"}]}


def _paid(order_id):
    return PaymentCreated(id=str(ObjectId()), orderId=order_id, stripeId="pi_test")


async def _complete(db, order):
    doc = await stored_order(db, order)
    return doc if doc["status"] == "complete" else None


async def test_marks_the_order_complete(client, publish, order, db, acked):
    seq = await publish(_paid(order["id"]))

    doc = await eventually(lambda: _complete(db, order))

    assert doc["version"] == 1
    assert await eventually(lambda: acked("payment.created", seq))
    shown = await client.get(f"{URL}/{order['id']}", headers=order["headers"])
    assert shown.json()["status"] == "complete"


async def test_a_replayed_payment_changes_nothing(client, publish, order, db, acked):
    event = _paid(order["id"])
    await publish(event)
    await eventually(lambda: _complete(db, order))
    before = await stored_order(db, order)

    seq = await publish(event)

    assert await eventually(lambda: acked("payment.created", seq))
    assert await stored_order(db, order) == before


async def test_a_paid_order_keeps_its_ticket_and_cannot_be_cancelled(
    client, publish, order, db, signin
):
    await publish(_paid(order["id"]))
    await eventually(lambda: _complete(db, order))

    cancel = await client.delete(f"{URL}/{order['id']}", headers=order["headers"])
    again = await client.post(URL, json={"ticketId": order["ticket"]["id"]}, headers=signin())

    assert cancel.status_code == 400
    assert again.json() == RESERVED


async def test_a_payment_after_cancelling_leaves_the_order_cancelled(
    client, publish, order, db, signin, acked
):
    await client.delete(f"{URL}/{order['id']}", headers=order["headers"])
    other = await client.post(URL, json={"ticketId": order["ticket"]["id"]}, headers=signin())
    assert other.status_code == 201

    seq = await publish(_paid(order["id"]))
    assert await eventually(lambda: acked("payment.created", seq))

    doc = await stored_order(db, order)
    assert doc["status"] == "cancelled" and "activeTicketId" not in doc
    holder = await db["orders"].find_one({"_id": ObjectId(other.json()["id"])})
    assert holder["activeTicketId"] == ObjectId(order["ticket"]["id"])
    assert holder["status"] == "created"


async def test_a_refund_is_shown_on_the_cancelled_order(client, publish, order, acked):
    await client.delete(f"{URL}/{order['id']}", headers=order["headers"])
    await publish(_paid(order["id"]))
    refund = PaymentRefunded(id=str(ObjectId()), orderId=order["id"], stripeId="pi_test")
    await publish(refund)
    seq = await publish(refund)  # delivered twice: one change

    assert await eventually(lambda: acked("payment.refunded", seq))
    shown = (await client.get(f"{URL}/{order['id']}", headers=order["headers"])).json()
    # The version is what other services follow by events: a refund, which sends none, keeps it.
    assert (shown["status"], shown["refunded"], shown["version"]) == ("cancelled", True, 1)


async def test_a_payment_for_an_unknown_order_ends_as_a_dead_letter(client, publish, bus):
    await publish(_paid(str(ObjectId())))

    (letter,) = await eventually(lambda: dead_letters(bus, "orders"))

    assert letter["subject"] == "payment.created"

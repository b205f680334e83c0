"""Charges end in a state that matches the order (SPEC §3 payments, [money]): attempts before
charges, one kept charge per order, refunds whichever of payment and cancellation lands first,
and the reconciler. Races are driven step by step with the fake's hold gate."""

import asyncio
import json
import logging

from bson import ObjectId

from ticketing_common.events import OrderCancelled
from ticketing_common.testing import consumer_caught_up, eventually

from .conftest import add_order, bus_messages, new_id, reconcile, signin

PAY = "/api/payments"
CHARGE = "POST /v1/payment_intents"


def errors(response):
    return response.json()["errors"]


async def pay(client, order, user_id, token="pm_card_visa"):
    return await client.post(
        PAY, json={"token": token, "orderId": str(order["_id"])}, headers=signin(user_id)
    )


async def cancel(bus, order, version=1):
    """`order:cancelled` as the orders service publishes it; returns its stream sequence."""
    event = OrderCancelled(id=str(order["_id"]), version=version, ticket={"id": new_id()})
    ack = await bus.publish(str(event.subject), json.dumps(event.payload()).encode(), new_id())
    return ack.seq


async def cancel_applied(bus, db, order, version=1):
    """Publish the cancellation and wait until payments has handled it (and acked it)."""
    seq = await cancel(bus, order, version)
    await eventually(lambda: consumer_caught_up(bus, "payments-order-cancelled", seq))
    replica = await db["orders"].find_one({"_id": order["_id"]})
    assert replica["status"] == "cancelled"


async def payments_of(db, order):
    return await db["payments"].find({"orderId": str(order["_id"])}).sort("createdAt", 1).to_list()


async def announced(db, bus, subject):
    """Every event on `subject`, once the outbox has handed over all it holds."""

    async def drained():
        return await db["payments"].count_documents({"outbox": {"$exists": True}}) == 0

    await eventually(drained)
    return await bus_messages(bus, subject)


async def held(fake, count=1):
    await eventually(lambda: _held_is(fake, count))


async def _held_is(fake, count):
    return await fake.held() == count


async def refunded(db, payment_id):
    return await db["payments"].find_one({"_id": ObjectId(payment_id), "status": "refunded"})


# --- cancellation after, or during, the charge --------------------------------------------------


async def test_a_cancellation_after_the_payment_refunds_it(client, db, bus, fake):
    user_id = new_id()
    order = await add_order(db, user_id=user_id, price=20)
    order_id = str(order["_id"])
    paid = await pay(client, order, user_id)
    assert paid.status_code == 201
    payment_id = paid.json()["id"]

    await cancel(bus, order)
    payment = await eventually(lambda: refunded(db, payment_id))
    assert "keptFor" not in payment and "refundDue" not in payment
    (intent,) = fake.intents(order_id)
    assert intent["amount_refunded"] == 2000
    (refund,) = await fake.refunds(intent["id"])
    assert refund["amount"] == 2000

    # A repeated cancellation finds nothing left to refund.
    seq = await cancel(bus, order)
    await eventually(lambda: consumer_caught_up(bus, "payments-order-cancelled", seq))
    assert len(await fake.refunds(intent["id"])) == 1
    event = {"id": payment_id, "orderId": order_id, "stripeId": intent["id"]}
    assert await announced(db, bus, "payment.refunded") == [event]
    assert await bus_messages(bus, "payment.created") == [event]


async def test_a_cancellation_while_the_charge_is_in_flight_refunds_it(client, db, bus, fake):
    user_id = new_id()
    order = await add_order(db, user_id=user_id, price=20)
    order_id = str(order["_id"])
    await fake.fault(match=CHARGE, hold=True, count=1)
    paying = asyncio.create_task(pay(client, order, user_id))
    await held(fake)
    # The attempt is recorded before Stripe is called.
    (attempt,) = await payments_of(db, order)
    assert (attempt["status"], attempt["key"]) == ("pending", f"{order_id}:pm_card_visa")

    # The listener finds no payment to refund: the charge has not come back yet.
    await cancel_applied(bus, db, order)
    await fake.release()
    response = await paying
    assert response.status_code == 400
    assert errors(response) == [{"message": "Cannot pay for an cancelled order"}]

    (payment,) = await payments_of(db, order)
    assert payment["status"] == "refunded"
    (intent,) = fake.intents(order_id)
    assert (intent["status"], intent["amount_refunded"]) == ("succeeded", 2000)
    assert payment["stripeId"] == intent["id"]
    event = {"id": str(payment["_id"]), "orderId": order_id, "stripeId": intent["id"]}
    assert await announced(db, bus, "payment.refunded") == [event]
    assert await bus_messages(bus, "payment.created") in ([], [event])


async def test_a_cancelled_order_is_refused_before_any_charge(client, db, bus, fake):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    await cancel_applied(bus, db, order)
    response = await pay(client, order, user_id)
    assert errors(response) == [{"message": "Cannot pay for an cancelled order"}]
    assert fake.intents(str(order["_id"])) == []
    assert await payments_of(db, order) == []


# --- one kept charge per order ------------------------------------------------------------------


async def test_two_cards_at_once_keep_one_charge_and_refund_the_other(client, db, bus, fake):
    user_id = new_id()
    order = await add_order(db, user_id=user_id, price=20)
    order_id = str(order["_id"])
    # Both requests pass every check and reach Stripe before either charge comes back.
    await fake.fault(match=CHARGE, hold=True, count=2)
    paying = [
        asyncio.create_task(pay(client, order, user_id, token))
        for token in ("pm_card_visa", "pm_card_mastercard")
    ]
    await held(fake, 2)
    await fake.release()
    responses = await asyncio.gather(*paying)
    assert sorted(r.status_code for r in responses) == [201, 400]
    (winner,) = [r for r in responses if r.status_code == 201]
    (loser,) = [r for r in responses if r.status_code == 400]
    assert errors(loser) == [{"message": "Order has already been paid"}]

    kept, other = sorted(await payments_of(db, order), key=lambda p: p["status"] != "succeeded")
    assert (kept["status"], kept["keptFor"]) == ("succeeded", order_id)
    assert str(kept["_id"]) == winner.json()["id"]
    assert other["status"] == "refunded" and "keptFor" not in other
    refunds = {i["id"]: i["amount_refunded"] for i in fake.intents(order_id)}
    assert refunds == {kept["stripeId"]: 0, other["stripeId"]: 2000}
    created = {"id": str(kept["_id"]), "orderId": order_id, "stripeId": kept["stripeId"]}
    refund = {"id": str(other["_id"]), "orderId": order_id, "stripeId": other["stripeId"]}
    assert await announced(db, bus, "payment.refunded") == [refund]
    assert await bus_messages(bus, "payment.created") == [created]


async def test_a_request_retried_after_a_lost_answer_charges_once(client, db, bus, fake):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    order_id = str(order["_id"])
    # Stripe charges, but the answer is lost: the buyer sees a 503, the attempt stays pending.
    await fake.fault(match=CHARGE, fail_after_processing=True, count=1)
    lost = await pay(client, order, user_id)
    assert lost.status_code == 503
    assert errors(lost) == [{"message": "Service unavailable"}]
    (attempt,) = await payments_of(db, order)
    assert attempt["status"] == "pending"

    retried = await pay(client, order, user_id)
    assert retried.status_code == 201
    assert retried.json()["id"] == str(attempt["_id"])
    (intent,) = fake.intents(order_id)
    (payment,) = await payments_of(db, order)
    assert (payment["status"], payment["stripeId"]) == ("succeeded", intent["id"])
    event = {"id": str(attempt["_id"]), "orderId": order_id, "stripeId": intent["id"]}
    assert await announced(db, bus, "payment.created") == [event]


async def test_a_repeat_while_the_first_request_is_in_flight_charges_once(client, db, fake):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    await fake.fault(match=CHARGE, hold=True, count=1)
    first = asyncio.create_task(pay(client, order, user_id))
    await held(fake)
    # The repeat goes on with the same attempt (one charge), but the first request answers
    # for it: the repeat learns the order is paid.
    second = await pay(client, order, user_id)
    assert second.status_code == 400
    assert errors(second) == [{"message": "Order has already been paid"}]
    await fake.release()
    response = await first
    assert response.status_code == 201
    (intent,) = fake.intents(str(order["_id"]))
    assert intent["amount_refunded"] == 0
    (payment,) = await payments_of(db, order)
    assert str(payment["_id"]) == response.json()["id"]
    assert payment["stripeId"] == intent["id"]


# --- the reconciler -----------------------------------------------------------------------------


async def test_the_reconciler_settles_a_charge_whose_answer_was_lost(
    app, client, db, bus, fake, caplog
):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    order_id = str(order["_id"])
    await fake.fault(match=CHARGE, fail_after_processing=True, count=1)
    assert (await pay(client, order, user_id)).status_code == 503
    (attempt,) = await payments_of(db, order)
    assert attempt["status"] == "pending"
    assert await bus_messages(bus, "payment.created") == []

    with caplog.at_level(logging.WARNING, logger="ticketing.payments"):
        assert await reconcile(app) == {"settled": 1}
    assert any("settled" in r.getMessage() for r in caplog.records)
    (intent,) = fake.intents(order_id)  # the same PaymentIntent, not a second charge
    (payment,) = await payments_of(db, order)
    assert (payment["status"], payment["stripeId"]) == ("succeeded", intent["id"])
    assert payment["keptFor"] == order_id
    event = {"id": str(attempt["_id"]), "orderId": order_id, "stripeId": intent["id"]}
    assert await announced(db, bus, "payment.created") == [event]

    # Nothing is left to repair, and the order counts as paid.
    assert await reconcile(app) == {}
    again = await pay(client, order, user_id, "tok_visa")
    assert errors(again) == [{"message": "Order has already been paid"}]


async def test_the_reconciler_fails_a_declined_attempt_whose_answer_was_lost(app, client, db, fake):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    await fake.fault(match=CHARGE, fail_after_processing=True, count=1)
    assert (await pay(client, order, user_id, "pm_card_chargeDeclined")).status_code == 503
    assert await reconcile(app) == {"failed": 1}
    (attempt,) = await payments_of(db, order)
    assert (attempt["status"], attempt["failure"]) == ("failed", "Your card was declined.")


async def test_the_reconciler_leaves_an_attempt_to_its_request_for_a_while(
    mongo_uri, nats_url, db, fake
):
    from ticketing_common.testing import serve
    from ticketing_payments.main import build

    from .conftest import make_settings

    settings = make_settings(mongo_uri, nats_url, fake.url, reconcile_after_seconds=600)
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    app = build(settings)
    async with serve(app) as client:
        await fake.fault(match=CHARGE, fail=500, count=1)
        assert (await pay(client, order, user_id)).status_code == 503
        assert await reconcile(app) == {}
    (attempt,) = await payments_of(db, order)
    assert attempt["status"] == "pending"


async def test_a_refund_stripe_did_not_take_is_finished_by_the_reconciler(
    app, client, db, bus, fake
):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    paid = await pay(client, order, user_id)
    payment_id = paid.json()["id"]
    await fake.fault(match="POST /v1/refunds", fail=500, count=1)
    await cancel_applied(bus, db, order)
    # The refund was decided (and marked) before Stripe failed it.
    payment = await db["payments"].find_one({"_id": ObjectId(payment_id)})
    assert (payment["status"], payment["refundDue"]) == ("succeeded", True)

    assert await reconcile(app) == {"refunded": 1}
    payment = await refunded(db, payment_id)
    assert payment is not None
    (intent,) = fake.intents(str(order["_id"]))
    assert intent["amount_refunded"] == intent["amount"]
    assert len(await announced(db, bus, "payment.refunded")) == 1


async def test_the_reconciler_refunds_a_kept_payment_of_a_cancelled_order(
    app, client, db, bus, fake
):
    """As if the service stopped after keeping the payment and before reading the order,
    while the listener had read the payments just before: nobody saw the other."""
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    paid = await pay(client, order, user_id)
    payment_id = ObjectId(paid.json()["id"])
    await db["payments"].update_one({"_id": payment_id}, {"$set": {"orderCheckDue": True}})
    await db["orders"].update_one({"_id": order["_id"]}, {"$set": {"status": "cancelled"}})

    assert await reconcile(app) == {"checked-cancelled": 1}
    assert await refunded(db, str(payment_id)) is not None
    (intent,) = fake.intents(str(order["_id"]))
    assert intent["amount_refunded"] == intent["amount"]
    assert len(await announced(db, bus, "payment.refunded")) == 1


async def test_the_reconciler_runs_on_its_timer(mongo_uri, nats_url, db, bus, fake):
    from ticketing_common.testing import serve
    from ticketing_payments.main import build

    from .conftest import make_settings

    settings = make_settings(mongo_uri, nats_url, fake.url, reconcile_seconds=0.1)
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    async with serve(build(settings)) as client:
        await fake.fault(match=CHARGE, fail_after_processing=True, count=1)
        assert (await pay(client, order, user_id)).status_code == 503
        (attempt,) = await payments_of(db, order)
        payment = await eventually(
            lambda: db["payments"].find_one({"_id": attempt["_id"], "status": "succeeded"})
        )
    assert len(fake.intents(str(order["_id"]))) == 1
    assert payment["keptFor"] == str(order["_id"])


# --- storage written before attempts ------------------------------------------------------------


async def test_payments_stored_before_attempts_are_upgraded(mongo_uri, nats_url, db, fake):
    from ticketing_common.testing import serve
    from ticketing_payments.main import build

    from .conftest import make_settings

    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    order_id = str(order["_id"])
    await db["payments"].create_index([("orderId", 1)], unique=True)
    await db["payments"].insert_one({"orderId": order_id, "stripeId": "pi_old", "amount": 2000})
    async with serve(build(make_settings(mongo_uri, nats_url, fake.url))) as client:
        response = await pay(client, order, user_id)
        assert errors(response) == [{"message": "Order has already been paid"}]
        # Another order can have several attempts now: the unique index on orderId is gone.
        other = await add_order(db, user_id=user_id)
        assert (await pay(client, other, user_id, "pm_card_chargeDeclined")).status_code == 402
        assert (await pay(client, other, user_id, "pm_card_visa")).status_code == 201
    (payment,) = await payments_of(db, order)
    assert (payment["status"], payment["keptFor"]) == ("succeeded", order_id)
    indexes = (await db["payments"].index_information()).values()
    assert not [i for i in indexes if list(i["key"]) == [("orderId", 1)] and i.get("unique")]

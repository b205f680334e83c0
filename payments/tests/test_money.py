"""Charges end in a state that matches the order (SPEC §3 payments, [money]): attempts before
charges, one kept charge per order, refunds whichever of payment and cancellation lands first,
and the reconciler. Races are driven step by step with the fake's hold gate."""

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from ticketing_common.events import OrderCancelled
from ticketing_common.moments import epoch_ms, now_ms
from ticketing_payments.domain import MAX_ATTEMPTS
from ticketing_payments.gateway import refund_key
from ticketing_testing import bearer, eventually

from .support import (
    STRIPE_KEY,
    add_order,
    new_id,
    outboxes_drained,
    payment_by_id,
    payments_of,
    reconcile,
)

PAY = "/api/payments"
CHARGE = "POST /v1/payment_intents"


def errors(response):
    return response.json()["errors"]


async def pay(client, order, user_id, token="pm_card_visa"):
    return await client.post(
        PAY, json={"token": token, "orderId": str(order["_id"])}, headers=bearer(user_id)
    )


async def cancel(publish, order, version=1):
    """`order:cancelled` as the orders service publishes it; returns its stream sequence."""
    event = OrderCancelled(id=str(order["_id"]), version=version, ticket={"id": new_id()})
    return await publish(event)


async def cancel_applied(publish, acked, db, order, version=1):
    """Publish the cancellation and wait until payments has handled it (and acked it)."""
    seq = await cancel(publish, order, version)
    await eventually(lambda: acked("order.cancelled", seq))
    replica = await db["orders"].find_one({"_id": order["_id"]})
    assert replica["status"] == "cancelled"


async def announced(db, published, subject):
    """Every event on `subject`, once the outbox has handed over all it holds."""
    await eventually(lambda: outboxes_drained(db))
    return await published(subject)


async def held(fake, count=1):
    await eventually(lambda: _held_is(fake, count))


async def _held_is(fake, count):
    return await fake.held() == count


async def refunded(db, payment_id):
    payment = await payment_by_id(db, payment_id)
    return payment if payment is not None and payment["status"] == "refunded" else None


# --- cancellation after, or during, the charge --------------------------------------------------


async def test_a_cancellation_after_the_payment_refunds_it(
    client, db, publish, acked, published, fake
):
    user_id = new_id()
    order = await add_order(db, user_id=user_id, price=20)
    order_id = str(order["_id"])
    paid = await pay(client, order, user_id)
    assert paid.status_code == 201
    payment_id = paid.json()["id"]

    await cancel(publish, order)
    payment = await eventually(lambda: refunded(db, payment_id))
    assert not payment["kept"] and "refundDue" not in payment
    (intent,) = fake.intents(order_id)
    assert intent["amount_refunded"] == 2000
    (refund,) = await fake.refunds(intent["id"])
    assert refund["amount"] == 2000

    # A repeated cancellation finds nothing left to refund.
    seq = await cancel(publish, order)
    await eventually(lambda: acked("order.cancelled", seq))
    assert len(await fake.refunds(intent["id"])) == 1
    event = {"id": payment_id, "orderId": order_id, "stripeId": intent["id"]}
    assert await announced(db, published, "payment.refunded") == [event]
    assert await published("payment.created") == [event]


async def test_a_cancellation_while_the_charge_is_in_flight_refunds_it(
    client, db, publish, acked, published, fake
):
    user_id = new_id()
    order = await add_order(db, user_id=user_id, price=20)
    order_id = str(order["_id"])
    await fake.fault(match=CHARGE, hold=True, count=1)
    paying = asyncio.create_task(pay(client, order, user_id))
    await held(fake)
    # The attempt is recorded before Stripe is called.
    (attempt,) = await payments_of(db, order["_id"])
    assert (attempt["status"], attempt["key"]) == ("pending", f"{order_id}:pm_card_visa")

    # The listener finds no payment to refund: the charge has not come back yet.
    await cancel_applied(publish, acked, db, order)
    await fake.release()
    response = await paying
    assert response.status_code == 400
    assert errors(response) == [{"message": "Cannot pay for an cancelled order"}]

    (payment,) = await payments_of(db, order["_id"])
    assert payment["status"] == "refunded"
    (intent,) = fake.intents(order_id)
    assert (intent["status"], intent["amount_refunded"]) == ("succeeded", 2000)
    assert payment["stripeId"] == intent["id"]
    event = {"id": payment["id"], "orderId": order_id, "stripeId": intent["id"]}
    assert await announced(db, published, "payment.refunded") == [event]
    assert await published("payment.created") in ([], [event])


async def test_a_cancelled_order_is_refused_before_any_charge(client, db, publish, acked, fake):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    await cancel_applied(publish, acked, db, order)
    response = await pay(client, order, user_id)
    assert errors(response) == [{"message": "Cannot pay for an cancelled order"}]
    assert fake.intents(str(order["_id"])) == []
    assert await payments_of(db, order["_id"]) == []


# --- one kept charge per order ------------------------------------------------------------------


async def test_two_cards_at_once_keep_one_charge_and_refund_the_other(client, db, published, fake):
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

    kept, other = sorted(
        await payments_of(db, order["_id"]), key=lambda p: p["status"] != "succeeded"
    )
    assert (kept["status"], kept["kept"]) == ("succeeded", True)
    assert kept["id"] == winner.json()["id"]
    assert other["status"] == "refunded" and not other["kept"]
    refunds = {i["id"]: i["amount_refunded"] for i in fake.intents(order_id)}
    assert refunds == {kept["stripeId"]: 0, other["stripeId"]: 2000}
    created = {"id": kept["id"], "orderId": order_id, "stripeId": kept["stripeId"]}
    refund = {"id": other["id"], "orderId": order_id, "stripeId": other["stripeId"]}
    assert await announced(db, published, "payment.refunded") == [refund]
    assert await published("payment.created") == [created]


async def test_a_request_retried_after_a_lost_answer_charges_once(client, db, published, fake):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    order_id = str(order["_id"])
    # Stripe charges, but the answer is lost: the buyer sees a 503, the attempt stays pending.
    await fake.fault(match=CHARGE, fail_after_processing=True, count=1)
    lost = await pay(client, order, user_id)
    assert lost.status_code == 503
    assert errors(lost) == [{"message": "Service unavailable"}]
    (attempt,) = await payments_of(db, order["_id"])
    assert attempt["status"] == "pending"

    retried = await pay(client, order, user_id)
    assert retried.status_code == 201
    assert retried.json()["id"] == attempt["id"]
    (intent,) = fake.intents(order_id)
    (payment,) = await payments_of(db, order["_id"])
    assert (payment["status"], payment["stripeId"]) == ("succeeded", intent["id"])
    event = {"id": attempt["id"], "orderId": order_id, "stripeId": intent["id"]}
    assert await announced(db, published, "payment.created") == [event]


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
    (payment,) = await payments_of(db, order["_id"])
    assert payment["id"] == response.json()["id"]
    assert payment["stripeId"] == intent["id"]


async def test_an_order_takes_so_many_cards_and_then_no_new_one(client, db, fake):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    # Cards Stripe does not know: each is refused at once, and each is an attempt.
    for i in range(MAX_ATTEMPTS):
        token = f"pm_unknown_{i}"
        response = await pay(client, order, user_id, token)
        assert response.status_code == 400, response.text
        assert errors(response) == [
            {"message": f"No such PaymentMethod: '{token}'", "field": "token"}
        ]
    attempts = await payments_of(db, order["_id"])
    assert [(a["status"], a["kept"]) for a in attempts] == [("failed", False)] * MAX_ATTEMPTS

    # One more card, one Stripe would charge, is refused before Stripe is called.
    response = await pay(client, order, user_id, "pm_card_visa")
    assert response.status_code == 400
    assert errors(response) == [{"message": "Too many payment attempts for this order"}]
    assert fake.intents(str(order["_id"])) == []
    assert len(await payments_of(db, order["_id"])) == MAX_ATTEMPTS
    # A card tried already is the same attempt: answered as before, not refused for the count.
    again = await pay(client, order, user_id, "pm_unknown_0")
    assert errors(again) == [{"message": "No such PaymentMethod: 'pm_unknown_0'", "field": "token"}]


# --- the reconciler -----------------------------------------------------------------------------


async def test_the_reconciler_settles_a_charge_whose_answer_was_lost(
    app, client, db, published, fake, caplog
):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    order_id = str(order["_id"])
    await fake.fault(match=CHARGE, fail_after_processing=True, count=1)
    assert (await pay(client, order, user_id)).status_code == 503
    (attempt,) = await payments_of(db, order["_id"])
    assert attempt["status"] == "pending"
    assert await published("payment.created") == []

    with caplog.at_level(logging.WARNING, logger="ticketing.payments"):
        assert await reconcile(app) == {"settled": 1}
    assert any("settled" in r.getMessage() for r in caplog.records)
    (intent,) = fake.intents(order_id)  # the same PaymentIntent, not a second charge
    (payment,) = await payments_of(db, order["_id"])
    assert (payment["status"], payment["stripeId"]) == ("succeeded", intent["id"])
    assert payment["kept"]
    event = {"id": attempt["id"], "orderId": order_id, "stripeId": intent["id"]}
    assert await announced(db, published, "payment.created") == [event]

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
    (attempt,) = await payments_of(db, order["_id"])
    assert (attempt["status"], attempt["failure"]) == ("failed", "Your card was declined.")


async def test_the_reconciler_leaves_an_attempt_to_its_request_for_a_while(
    service, settings, db, fake
):
    from ticketing_testing import serve

    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    app = service.build(settings.model_copy(update={"reconcile_after_seconds": 600}))
    async with serve(app) as client:
        await fake.fault(match=CHARGE, fail=500, count=1)
        assert (await pay(client, order, user_id)).status_code == 503
        assert await reconcile(app) == {}
    (attempt,) = await payments_of(db, order["_id"])
    assert attempt["status"] == "pending"


async def test_a_refund_stripe_did_not_take_is_finished_by_the_reconciler(
    app, client, db, publish, acked, published, fake
):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    paid = await pay(client, order, user_id)
    payment_id = paid.json()["id"]
    await fake.fault(match="POST /v1/refunds", fail=500, count=1)
    await cancel_applied(publish, acked, db, order)
    # The refund was decided (and marked) before Stripe failed it.
    payment = await payment_by_id(db, payment_id)
    assert (payment["status"], payment["refundDue"]) == ("succeeded", True)

    assert await reconcile(app) == {"refunded": 1}
    payment = await refunded(db, payment_id)
    assert payment is not None
    (intent,) = fake.intents(str(order["_id"]))
    assert intent["amount_refunded"] == intent["amount"]
    assert len(await announced(db, published, "payment.refunded")) == 1


@pytest.mark.parametrize("stripe_refunded", [False, True], ids=["before-stripe", "after-stripe"])
async def test_a_refund_marked_due_before_a_crash_is_finished_by_the_reconciler(
    app, client, db, published, fake, stripe_refunded
):
    """As if the service stopped right after marking the refund of a cancelled order's kept
    payment due (`mark_refund_due`): before asking Stripe, or after Stripe refunded and before
    the refund was recorded. The mark alone has the reconciler finish it, with one refund."""
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    order_id = str(order["_id"])
    paid = await pay(client, order, user_id)
    payment = await payment_by_id(db, paid.json()["id"])
    assert payment["kept"]
    (intent,) = fake.intents(order_id)
    at, then = f"attempts.{payment['slot']}", now_ms() - 60_000
    await db["orders"].update_one(
        {"_id": order["_id"]},
        {
            "$set": {
                "status": "cancelled",
                "version": 1,
                f"{at}.refundDue": True,
                f"{at}.refundReason": "the order is cancelled",
                f"{at}.updatedAt": then,
                "refundDueAt": then,
            },
            "$inc": {"rev": 1},
        },
    )
    if stripe_refunded:  # the service's own call, with its idempotency key
        await fake._call(
            "POST",
            "/v1/refunds",
            data={"payment_intent": intent["id"]},
            headers={
                "Authorization": f"Bearer {STRIPE_KEY}",
                "Idempotency-Key": refund_key(intent["id"]),
            },
        )

    assert await reconcile(app) == {"refunded": 1}
    payment = await refunded(db, payment["id"])
    assert payment is not None and not payment["kept"] and "refundDue" not in payment
    replica = await db["orders"].find_one({"_id": order["_id"]})
    assert "kept" not in replica and "refundDueAt" not in replica
    (refund,) = await fake.refunds(intent["id"])
    assert refund["amount"] == intent["amount"]
    event = {"id": payment["id"], "orderId": order_id, "stripeId": intent["id"]}
    assert await announced(db, published, "payment.refunded") == [event]
    assert await reconcile(app) == {}


async def test_the_reconciler_runs_on_its_timer(start, db, fake):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    async with start(reconcile_seconds=0.1) as client:
        await fake.fault(match=CHARGE, fail_after_processing=True, count=1)
        assert (await pay(client, order, user_id)).status_code == 503
        (attempt,) = await payments_of(db, order["_id"])
        payment = await eventually(lambda: _succeeded(db, attempt["id"]))
    assert len(fake.intents(str(order["_id"]))) == 1
    assert payment["kept"]


async def _succeeded(db, payment_id):
    payment = await payment_by_id(db, payment_id)
    return payment if payment is not None and payment["status"] == "succeeded" else None


# --- storage written before attempts ------------------------------------------------------------


async def test_payments_stored_before_attempts_are_upgraded(start, db, fake):
    """Payments stored in their own collection, as a payment per order (the oldest shape) or
    as attempts, move into their orders' documents when the service starts."""
    user_id = new_id()
    oldest = await add_order(db, user_id=user_id)  # an order stored before attempts, too
    await db["orders"].update_one(
        {"_id": oldest["_id"]}, {"$unset": {"rev": "", "attempts": "", "tries": ""}}
    )
    kept, declined = [await add_order(db, user_id=user_id) for _ in range(2)]
    kept_id, declined_id = str(kept["_id"]), str(declined["_id"])
    then = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=0)
    legacy = [
        {
            "_id": ObjectId(),
            "orderId": str(oldest["_id"]),
            "stripeId": "pi_old",
            "amount": 2000,
            "createdAt": then,
        },
        {
            "_id": ObjectId(),
            "orderId": kept_id,
            "key": f"{kept_id}:pm_card_visa",
            "token": "pm_card_visa",
            "status": "succeeded",
            "stripeId": "pi_kept",
            "amount": 2000,
            "currency": "usd",
            "keptFor": kept_id,
            "createdAt": then,
            "updatedAt": then,
            "heldUntil": then,
        },
        {
            "_id": ObjectId(),
            "orderId": declined_id,
            "key": f"{declined_id}:pm_card_chargeDeclined",
            "token": "pm_card_chargeDeclined",
            "status": "failed",
            "failure": "Your card was declined.",
            "stripeId": "pi_declined",
            "amount": 2000,
            "currency": "usd",
            "createdAt": then,
            "updatedAt": then,
            "heldUntil": then,
        },
    ]
    await db["payments"].insert_many(legacy)
    async with start() as client:
        assert await db["payments"].count_documents({}) == 0
        (first,) = await payments_of(db, oldest["_id"])
        assert (first["id"], first["status"], first["stripeId"]) == (
            str(legacy[0]["_id"]),
            "succeeded",
            "pi_old",
        )
        assert first["kept"] and first["createdAt"] == epoch_ms(then)
        (second,) = await payments_of(db, kept_id)
        assert (second["id"], second["status"], second["stripeId"]) == (
            str(legacy[1]["_id"]),
            "succeeded",
            "pi_kept",
        )
        assert (second["key"], second["token"]) == (f"{kept_id}:pm_card_visa", "pm_card_visa")
        assert second["kept"] and second["updatedAt"] == epoch_ms(then)
        (third,) = await payments_of(db, declined_id)
        assert (third["id"], third["status"], third["failure"]) == (
            str(legacy[2]["_id"]),
            "failed",
            "Your card was declined.",
        )
        assert not third["kept"]

        # The orders that kept a payment refuse another, with the same card or a new one.
        for order in (oldest, kept):
            for token in ("pm_card_visa", "tok_visa"):
                response = await pay(client, order, user_id, token)
                assert response.status_code == 400
                assert errors(response) == [{"message": "Order has already been paid"}]
            assert fake.intents(str(order["_id"])) == []
        # The order whose card was declined takes another card.
        paid = await pay(client, declined, user_id, "pm_card_visa")
        assert paid.status_code == 201
    failed, payment = await payments_of(db, declined_id)
    assert (failed["id"], failed["status"], failed["kept"]) == (third["id"], "failed", False)
    assert (payment["id"], payment["status"], payment["kept"]) == (
        paid.json()["id"],
        "succeeded",
        True,
    )

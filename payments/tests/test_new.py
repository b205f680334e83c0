"""POST /api/payments: the original's cases, then validation, payment states and Stripe."""

import asyncio

from ticketing_common.events import OrderStatus
from ticketing_testing import bearer, eventually

from .support import add_order, all_payments, new_id, payments_of

PAY = "/api/payments"


def errors(response):
    return response.json()["errors"]


# --- the original test suite ----------------------------------------------------------------


async def test_returns_a_404_when_purchasing_an_order_that_does_not_exist(client, signin):
    response = await client.post(
        PAY, json={"token": "pm_card_visa", "orderId": new_id()}, headers=signin()
    )
    assert response.status_code == 404
    assert errors(response) == [{"message": "Not Found"}]


async def test_returns_a_401_when_purchasing_an_order_that_doesnt_belong_to_the_user(
    client, db, signin
):
    order = await add_order(db)
    response = await client.post(
        PAY, json={"token": "pm_card_visa", "orderId": str(order["_id"])}, headers=signin()
    )
    assert response.status_code == 401
    assert errors(response) == [{"message": "Not authorized"}]


async def test_returns_a_400_when_purchasing_a_cancelled_order(client, db, signin):
    user_id = new_id()
    order = await add_order(db, user_id=user_id, status=OrderStatus.CANCELLED)
    response = await client.post(
        PAY, json={"token": "pm_card_visa", "orderId": str(order["_id"])}, headers=signin(user_id)
    )
    assert response.status_code == 400
    assert errors(response) == [{"message": "Cannot pay for an cancelled order"}]


async def test_returns_a_201_with_valid_inputs(client, db, published, fakestripe, signin):
    user_id = new_id()
    order = await add_order(db, user_id=user_id, price=20.15)
    order_id = str(order["_id"])
    response = await client.post(
        PAY, json={"token": "pm_card_visa", "orderId": order_id}, headers=signin(user_id)
    )
    assert response.status_code == 201, response.text
    payment_id = response.json()["id"]
    assert set(response.json()) == {"id"}

    (intent,) = fakestripe.intents(order_id)
    assert intent["amount"] == 2015
    assert intent["currency"] == "usd"
    assert intent["status"] == "succeeded"
    assert intent["payment_method"] == "pm_card_visa"

    # The payment is stored with its order, which now keeps it; what it charged is the
    # order's price (checked at Stripe above).
    (payment,) = await payments_of(db, order_id)
    assert payment["id"] == payment_id
    assert payment["stripeId"] == intent["id"]
    assert payment["status"] == "succeeded"
    assert payment["kept"]
    assert payment["key"] == f"{order_id}:pm_card_visa"
    assert "refundDue" not in payment

    (event,) = await eventually(lambda: published("payment.created"))
    assert event == {"id": payment_id, "orderId": order_id, "stripeId": intent["id"]}


# --- validation and sessions -----------------------------------------------------------------


async def test_returns_a_401_when_signed_out(client):
    for body in ({"token": "pm_card_visa", "orderId": new_id()}, {}):
        response = await client.post(PAY, json=body)
        assert response.status_code == 401
        assert errors(response) == [{"message": "Not authorized"}]


async def test_returns_a_400_naming_each_missing_or_empty_field(client, signin):
    nothing = await client.post(PAY, json={}, headers=signin())
    assert nothing.status_code == 400
    assert errors(nothing) == [
        {"message": "Invalid value", "field": "token"},
        {"message": "Invalid value", "field": "orderId"},
    ]
    for body, field in (
        ({"token": "", "orderId": new_id()}, "token"),
        ({"token": "   ", "orderId": new_id()}, "token"),
        ({"token": 42, "orderId": new_id()}, "token"),
        ({"token": "pm_card_visa" * 30, "orderId": new_id()}, "token"),
        ({"token": "pm_card_visa", "orderId": ""}, "orderId"),
        ({"token": "pm_card_visa", "orderId": None}, "orderId"),
    ):
        response = await client.post(PAY, json=body, headers=signin())
        assert response.status_code == 400, body
        assert errors(response) == [{"message": "Invalid value", "field": field}], body


async def test_a_body_that_is_not_a_json_object_is_a_400(client, signin):
    response = await client.post(
        PAY, content=b"[1]", headers={**signin(), "content-type": "application/json"}
    )
    assert response.status_code == 400
    assert errors(response) == [{"message": "Request body must be a JSON object"}]


async def test_a_malformed_order_id_is_a_404(client, signin):
    response = await client.post(
        PAY, json={"token": "pm_card_visa", "orderId": "not-an-id"}, headers=signin()
    )
    assert response.status_code == 404
    assert errors(response) == [{"message": "Not Found"}]


# --- the order's state -----------------------------------------------------------------------


async def _pay(client, order, user_id, token="pm_card_visa"):
    return await client.post(
        PAY, json={"token": token, "orderId": str(order["_id"])}, headers=bearer(user_id)
    )


async def test_an_order_already_paid_is_a_400_and_is_not_charged_again(client, db, fakestripe):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    assert (await _pay(client, order, user_id)).status_code == 201
    for token in ("pm_card_visa", "tok_visa"):
        again = await _pay(client, order, user_id, token)
        assert again.status_code == 400
        assert errors(again) == [{"message": "Order has already been paid"}]
    assert len(fakestripe.intents(str(order["_id"]))) == 1
    assert len(await all_payments(db)) == 1


async def test_an_expired_order_is_a_400(client, db, fakestripe):
    user_id = new_id()
    order = await add_order(db, user_id=user_id, expires_in=-1)
    response = await _pay(client, order, user_id)
    assert response.status_code == 400
    assert errors(response) == [{"message": "Order has expired"}]
    assert fakestripe.intents(str(order["_id"])) == []


# --- Stripe ------------------------------------------------------------------------------------


async def test_a_declined_card_is_a_402_and_the_order_stays_payable(client, db, fakestripe):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    declined = await _pay(client, order, user_id, "pm_card_chargeDeclined")
    assert declined.status_code == 402
    assert errors(declined) == [{"message": "Your card was declined."}]
    (attempt,) = await all_payments(db)
    assert attempt["status"] == "failed"
    assert attempt["failure"] == "Your card was declined."
    assert not attempt["kept"]

    # The same card again is the same attempt: Stripe replays its decline, charging nothing.
    again = await _pay(client, order, user_id, "pm_card_chargeDeclined")
    assert again.status_code == 402
    assert len(fakestripe.intents(str(order["_id"]))) == 1

    # A new card is a new attempt, and the order's one kept charge.
    paid = await _pay(client, order, user_id, "pm_card_visa")
    assert paid.status_code == 201
    intents = fakestripe.intents(str(order["_id"]))
    assert [i["status"] for i in intents] == ["requires_payment_method", "succeeded"]
    assert len(await all_payments(db)) == 2
    (payment,) = [p for p in await payments_of(db, order["_id"]) if p["kept"]]
    assert payment["id"] == paid.json()["id"]
    assert payment["stripeId"] == intents[1]["id"]


async def test_an_unknown_payment_method_is_a_400_on_the_token(client, db):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    response = await _pay(client, order, user_id, "pm_nonexistent")
    assert response.status_code == 400
    assert errors(response) == [
        {"message": "No such PaymentMethod: 'pm_nonexistent'", "field": "token"}
    ]


async def test_an_amount_stripe_cannot_charge_is_a_400_with_its_message(client, db):
    user_id = new_id()
    order = await add_order(db, user_id=user_id, price=0.2)
    response = await _pay(client, order, user_id)
    assert response.status_code == 400
    assert errors(response) == [{"message": "Amount must be at least $0.50 usd"}]
    (attempt,) = await all_payments(db)
    assert (attempt["status"], attempt["failure"]) == (
        "failed",
        "Amount must be at least $0.50 usd",
    )
    assert not attempt["kept"]


async def test_stripe_unreachable_is_a_503(start, db):
    from ticketing_common.embedded import free_port

    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    async with start(stripe_api_base=f"http://127.0.0.1:{free_port()}") as client:
        response = await _pay(client, order, user_id)
    assert response.status_code == 503
    assert errors(response) == [{"message": "Service unavailable"}]


# --- concurrency and repeats ---------------------------------------------------------------------


async def test_two_concurrent_payments_with_one_card_charge_once(client, db, fakestripe):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    responses = await asyncio.gather(*(_pay(client, order, user_id) for _ in range(2)))
    assert sorted(r.status_code for r in responses) == [201, 400]
    (loser,) = [r for r in responses if r.status_code == 400]
    assert errors(loser) == [{"message": "Order has already been paid"}]
    (intent,) = fakestripe.intents(str(order["_id"]))
    assert intent["amount_refunded"] == 0
    assert len(await all_payments(db)) == 1


async def test_a_double_submit_with_one_card_does_not_charge_twice(client, db, fakestripe):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    first = await _pay(client, order, user_id)
    second = await _pay(client, order, user_id)
    assert (first.status_code, second.status_code) == (201, 400)
    assert len(fakestripe.intents(str(order["_id"]))) == 1


async def test_concurrent_payments_with_two_cards_keep_one_charge(client, db, fakestripe):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    responses = await asyncio.gather(
        _pay(client, order, user_id, "pm_card_visa"), _pay(client, order, user_id, "tok_visa")
    )
    assert sorted(r.status_code for r in responses) == [201, 400]
    (payment,) = [p for p in await payments_of(db, order["_id"]) if p["kept"]]
    # Whichever way the race went, every charge but the kept one has been given back.
    for intent in fakestripe.intents(str(order["_id"])):
        kept = intent["amount_received"] - intent["amount_refunded"]
        assert kept == (intent["amount"] if intent["id"] == payment["stripeId"] else 0)

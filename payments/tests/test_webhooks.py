"""POST /api/payments/webhook: Stripe's signed events, applied through the same path as the
synchronous answer, once per event id. Events come from the fake (it records them as Stripe
would send them); the tests post them to the app themselves."""

import asyncio
import hashlib
import hmac
import json
import time

import httpx

from ticketing_testing import bearer, eventually

from .support import (
    WEBHOOK_SECRET,
    add_order,
    all_payments,
    new_id,
    outboxes_drained,
    payment_by_id,
    payments_of,
)

PAY = "/api/payments"
HOOK = "/api/payments/webhook"
CHARGE = "POST /v1/payment_intents"
INVALID = {"errors": [{"message": "Invalid signature"}]}


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


async def pay(client, order, user_id, token="pm_card_visa"):
    return await client.post(
        PAY, json={"token": token, "orderId": str(order["_id"])}, headers=bearer(user_id)
    )


async def deliver(client, fake, event_id, **signing):
    payload, signature = await fake.signed(event_id, **signing)
    return await client.post(
        HOOK,
        content=payload,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
    )


async def lost_answer(client, db, fake, token="pm_card_visa"):
    """A charge Stripe made whose answer never reached the service: the attempt is pending."""
    user_id = new_id()
    order = await add_order(db, user_id=user_id, price=20)
    await fake.fault(match=CHARGE, fail_after_processing=True, count=1)
    assert (await pay(client, order, user_id, token)).status_code == 503
    (intent,) = fake.intents(str(order["_id"]))
    (attempt,) = await payments_of(db, order["_id"])
    assert attempt["status"] == "pending"
    return order, intent, attempt


async def announced(db, published, subject):
    await eventually(lambda: outboxes_drained(db))
    return await published(subject)


async def test_a_succeeded_intent_settles_its_attempt_once_however_often_it_comes(
    client, db, published, fake
):
    order, intent, attempt = await lost_answer(client, db, fake)
    (event,) = await fake.events("payment_intent.succeeded", intent["id"])
    responses = await asyncio.gather(*(deliver(client, fake, event["id"]) for _ in range(3)))
    assert [(r.status_code, r.json()) for r in responses] == [(200, {"received": True})] * 3

    payment = await payment_by_id(db, attempt["id"])
    assert (payment["status"], payment["stripeId"]) == ("succeeded", intent["id"])
    assert payment["kept"]
    assert await db["webhook_events"].count_documents({}) == 1
    created = {"id": attempt["id"], "orderId": str(order["_id"]), "stripeId": intent["id"]}
    assert await announced(db, published, "payment.created") == [created]
    assert len(fake.intents(str(order["_id"]))) == 1

    again = await deliver(client, fake, event["id"])
    assert again.json() == {"received": True}
    assert await announced(db, published, "payment.created") == [created]


async def test_a_webhook_ahead_of_the_answer_leaves_the_201_to_the_request(
    client, db, published, fake
):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    order_id = str(order["_id"])
    # Stripe has charged; its answer to the request is held back, its webhook is not.
    await fake.fault(match=CHARGE, hold=True, after_processing=True, count=1)
    paying = asyncio.create_task(pay(client, order, user_id))
    await eventually(lambda: _held(fake))
    (intent,) = fake.intents(order_id)
    (event,) = await fake.events("payment_intent.succeeded", intent["id"])
    assert (await deliver(client, fake, event["id"])).status_code == 200
    (attempt,) = await payments_of(db, order_id)
    assert attempt["status"] == "succeeded"

    await fake.release()
    response = await paying
    assert response.status_code == 201
    assert response.json() == {"id": attempt["id"]}
    assert len(await announced(db, published, "payment.created")) == 1


async def _held(fake):
    return await fake.held() == 1


async def test_a_failed_intent_fails_its_attempt(client, db, fake):
    _, intent, attempt = await lost_answer(client, db, fake, "pm_card_chargeDeclined")
    (event,) = await fake.events("payment_intent.payment_failed", intent["id"])
    assert (await deliver(client, fake, event["id"])).json() == {"received": True}
    failed = await payment_by_id(db, attempt["id"])
    assert (failed["status"], failed["failure"]) == ("failed", "Your card was declined.")
    assert failed["stripeId"] == intent["id"]


async def test_a_refund_made_at_stripe_refunds_the_payment(client, db, published, fake):
    user_id = new_id()
    order = await add_order(db, user_id=user_id)
    paid = await pay(client, order, user_id)
    (intent,) = fake.intents(str(order["_id"]))
    await fake.refund(intent["id"])
    (event,) = await fake.events("charge.refunded", intent["id"])
    for _ in range(2):
        assert (await deliver(client, fake, event["id"])).json() == {"received": True}
    (payment,) = await payments_of(db, order["_id"])
    assert payment["status"] == "refunded"
    assert not payment["kept"]
    refunded = {"id": paid.json()["id"], "orderId": str(order["_id"]), "stripeId": intent["id"]}
    assert await announced(db, published, "payment.refunded") == [refunded]


async def test_a_missing_or_bad_signature_is_a_400_and_changes_nothing(client, db, fake):
    _, intent, attempt = await lost_answer(client, db, fake)
    (event,) = await fake.events("payment_intent.succeeded", intent["id"])
    payload, good = await fake.signed(event["id"])
    tampered = payload.replace(intent["id"].encode(), b"pi_forged", 1)
    stale = sign(payload, at=int(time.time()) - 301)
    for body, headers in (
        (payload, {}),
        (payload, {"Stripe-Signature": ""}),
        (payload, {"Stripe-Signature": "garbage"}),
        (payload, {"Stripe-Signature": sign(payload, "whsec_someone_else")}),
        (payload, {"Stripe-Signature": stale}),
        (tampered, {"Stripe-Signature": good}),
        (b"\xff\xfe", {"Stripe-Signature": good}),
    ):
        response = await client.post(HOOK, content=body, headers=headers)
        assert response.status_code == 400, headers
        assert response.json() == INVALID
    assert (await payment_by_id(db, attempt["id"]))["status"] == "pending"
    assert await db["webhook_events"].count_documents({}) == 0

    # Our own signature, made as Stripe makes it, is accepted.
    response = await client.post(HOOK, content=payload, headers={"Stripe-Signature": sign(payload)})
    assert response.json() == {"received": True}
    assert (await payment_by_id(db, attempt["id"]))["status"] == "succeeded"


async def test_without_a_webhook_secret_every_webhook_is_refused(start, db, fake):
    payload = json.dumps({"id": "evt_1", "type": "payment_intent.succeeded"}).encode()
    async with start(stripe_webhook_secret=None) as client:
        response = await client.post(
            HOOK, content=payload, headers={"Stripe-Signature": sign(payload)}
        )
    assert (response.status_code, response.json()) == (400, INVALID)


async def test_events_it_does_not_act_on_are_acknowledged(client, db):
    payload = json.dumps(
        {"id": "evt_other", "object": "event", "type": "customer.created", "data": {"object": {}}}
    ).encode()
    response = await client.post(HOOK, content=payload, headers={"Stripe-Signature": sign(payload)})
    assert (response.status_code, response.json()) == (200, {"received": True})
    assert await all_payments(db) == []


async def test_a_signed_body_that_is_not_an_event_is_a_400(client):
    for payload in (b"not json", b"[1]", b"{}"):
        response = await client.post(
            HOOK, content=payload, headers={"Stripe-Signature": sign(payload)}
        )
        assert response.status_code == 400, payload
        assert response.json() == {"errors": [{"message": "Invalid payload"}]}


async def test_webhooks_stripe_posts_over_http_are_applied_once(service, settings, db, fake):
    """The fake delivering to the service on a real port, as Stripe does, then again."""
    import uvicorn

    from ticketing_common.embedded import free_port

    port = free_port()
    config = uvicorn.Config(service.build(settings), host="127.0.0.1", port=port, log_config=None)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: _started(server))
        url = f"http://127.0.0.1:{port}{HOOK}"
        await fake._call("POST", "/_test/webhooks", json={"url": url, "retry_seconds": 0.1})
        user_id = new_id()
        order = await add_order(db, user_id=user_id)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            paid = await pay(client, order, user_id)
        assert paid.status_code == 201
        (intent,) = fake.intents(str(order["_id"]))
        (event,) = await fake.events("payment_intent.succeeded", intent["id"])
        delivered = await eventually(lambda: _deliveries(fake, event["id"]))
        assert [d["status"] for d in delivered] == [200]
        again = await fake._call("POST", "/_test/webhooks/redeliver", json={"id": event["id"]})
        assert [d["status"] for d in again["data"]] == [200]
        assert await db["webhook_events"].count_documents({"_id": event["id"]}) == 1
    finally:
        await fake._call("POST", "/_test/webhooks", json={"url": ""})
        server.should_exit = True
        await serving


async def _started(server):
    return server.started


async def _deliveries(fake, event_id):
    view = await fake._call("GET", "/_test/webhooks")
    return [d for d in view["deliveries"] if d["event"] == event_id]

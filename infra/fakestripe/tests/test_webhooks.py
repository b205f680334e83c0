"""Webhooks as Stripe sends them: signed Event objects, after the answer, retried, redelivered;
verified with the Stripe SDK's own `Webhook.construct_event`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import stripe

from fakestripe.webhooks import Config, sign
from ticketing_common.embedded import free_port, start_stripe

from .support import SECRET, Received, Receiver, Server, until

VISA: stripe.params.PaymentIntentCreateParams = {
    "amount": 2000,
    "currency": "usd",
    "payment_method": "pm_card_visa",
    "confirm": True,
    "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
    "metadata": {"orderId": "65f000000000000000000001"},
}


def verified(delivery: Received, secret: str = SECRET) -> stripe.Event:
    """The event as the payments service reads it: the SDK checks the signature of the raw body."""
    header = delivery.headers["stripe-signature"]
    event: stripe.Event = stripe.Webhook.construct_event(delivery.body.decode(), header, secret)
    return event


def test_a_success_is_a_signed_payment_intent_succeeded(
    hooked_client: stripe.StripeClient, hooked: Server, receiver: Receiver
) -> None:
    pi = hooked_client.v1.payment_intents.create(params=VISA, options={"idempotency_key": "k1"})
    [delivery] = receiver.wait_for(1)
    event = verified(delivery)
    assert event.type == "payment_intent.succeeded"
    assert event.id.startswith("evt_")
    assert (event.object, event.livemode, event.api_version) == (
        "event",
        False,
        "2026-10-28.endive",
    )
    assert abs(event.created - time.time()) < 60
    intent = event.data.object
    assert (intent["id"], intent["status"], intent["amount"]) == (pi.id, "succeeded", 2000)
    assert intent["metadata"]["orderId"] == "65f000000000000000000001"
    assert event.request is not None and event.request.idempotency_key == "k1"
    assert delivery.path == "/api/payments/webhook"
    assert delivery.headers["content-type"].startswith("application/json")
    assert delivery.headers["user-agent"].startswith("Stripe/")
    # The body is pretty-printed, as Stripe's: only the raw bytes verify, not re-serialised JSON.
    assert delivery.body.decode() != json.dumps(json.loads(delivery.body))
    with pytest.raises(stripe.SignatureVerificationError):
        verified(delivery, "whsec_another_secret")
    assert [e["id"] for e in hooked.events()] == [event.id]


def test_the_signature_is_stripes() -> None:
    payload = '{"id": "evt_1"}'
    header = sign(payload, SECRET, 1_700_000_000)
    expected = stripe.WebhookSignature.generate_signature_header(payload, SECRET, 1_700_000_000)
    assert header == expected
    assert header.startswith("t=1700000000,v1=")


def test_a_decline_is_payment_intent_payment_failed_once(
    hooked_client: stripe.StripeClient, hooked: Server, receiver: Receiver
) -> None:
    declined = {**VISA, "payment_method": "pm_card_chargeDeclined"}
    for _ in range(2):  # the second is a replay of the first: no new event
        with pytest.raises(stripe.CardError):
            hooked_client.v1.payment_intents.create(
                params=declined,  # type: ignore[arg-type]
                options={"idempotency_key": "declined"},
            )
    [delivery] = receiver.wait_for(1)
    event = verified(delivery)
    assert event.type == "payment_intent.payment_failed"
    intent = event.data.object
    assert intent["status"] == "requires_payment_method"
    assert intent["last_payment_error"]["decline_code"] == "generic_decline"
    assert intent["metadata"].to_dict() == VISA["metadata"]
    until(hooked.settled)
    assert len(hooked.events()) == 1
    assert len(receiver.received) == 1


def test_a_refund_is_charge_refunded_with_the_charge(
    hooked_client: stripe.StripeClient, hooked: Server, receiver: Receiver
) -> None:
    pi = hooked_client.v1.payment_intents.create(params=VISA)
    refund = hooked_client.v1.refunds.create(params={"payment_intent": pi.id})
    deliveries = receiver.wait_for(2)
    events = {verified(d).type: verified(d) for d in deliveries}
    assert events.keys() == {"payment_intent.succeeded", "charge.refunded"}
    charge = events["charge.refunded"].data.object
    assert charge["object"] == "charge"
    assert charge["id"] == pi.latest_charge
    assert (charge["payment_intent"], charge["amount"], charge["amount_refunded"]) == (
        pi.id,
        2000,
        2000,
    )
    assert charge["refunded"] is True
    assert charge["metadata"].to_dict() == VISA["metadata"]
    assert hooked.listing("refunds") == [
        {
            "id": refund.id,
            "object": "refund",
            "amount": 2000,
            "currency": "usd",
            "status": "succeeded",
            "payment_intent": pi.id,
            "charge": pi.latest_charge,
            "metadata": {},
            "created": refund.created,
        }
    ]
    [intent] = hooked.intents()
    assert (intent["status"], intent["amount"], intent["amount_refunded"]) == (
        "succeeded",
        2000,
        2000,
    )
    assert intent["metadata"] == VISA["metadata"]


def test_delivery_comes_after_the_answer(
    hooked_client: stripe.StripeClient, hooked: Server, receiver: Receiver
) -> None:
    receiver.gate.clear()  # the endpoint takes the event but does not answer yet
    pi = hooked_client.v1.payment_intents.create(params=VISA)
    [delivery] = receiver.wait_for(1)
    assert verified(delivery).data.object["id"] == pi.id
    assert hooked.webhooks()["pending"] == 1
    receiver.gate.set()
    view = until(hooked.settled)
    assert [(d["attempt"], d["status"], d["delivered"]) for d in view["deliveries"]] == [
        (1, 200, True)
    ]


def test_failed_deliveries_are_retried_with_the_same_event(
    hooked_client: stripe.StripeClient, hooked: Server, receiver: Receiver
) -> None:
    receiver.answers = [500, 503]
    hooked_client.v1.payment_intents.create(params=VISA)
    deliveries = receiver.wait_for(3)
    assert len({verified(d).id for d in deliveries}) == 1
    view = until(hooked.settled)
    assert [(d["attempt"], d["status"]) for d in view["deliveries"]] == [
        (1, 500),
        (2, 503),
        (3, 200),
    ]
    assert [d["delivered"] for d in view["deliveries"]] == [False, False, True]


def test_retries_stop_after_the_last_attempt(
    hooked_client: stripe.StripeClient, hooked: Server, receiver: Receiver
) -> None:
    receiver.answers = [404] * 10  # no webhook route yet
    hooked_client.v1.payment_intents.create(params=VISA)
    view = until(hooked.settled)  # no delivery under way: nothing more can come
    assert [d["status"] for d in view["deliveries"]] == [404, 404, 404]
    assert len(receiver.received) == 3


def test_an_unreachable_endpoint_is_retried_then_given_up(
    hooked_client: stripe.StripeClient, hooked: Server
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/api/payments/webhook"
    hooked.control("POST", "webhooks", {"url": closed})
    hooked_client.v1.payment_intents.create(params=VISA)
    view = until(hooked.settled)
    assert [d["attempt"] for d in view["deliveries"]] == [1, 2, 3]
    assert all(d["status"] is None and "Connect" in d["error"] for d in view["deliveries"])


def test_redeliver_sends_events_again_as_stripe_may(
    hooked_client: stripe.StripeClient, hooked: Server, receiver: Receiver
) -> None:
    first = hooked_client.v1.payment_intents.create(params=VISA)
    hooked_client.v1.payment_intents.create(params=VISA)
    receiver.wait_for(2)
    until(hooked.settled)
    again = hooked.control("POST", "webhooks/redeliver")["data"]
    assert [(d["status"], d["delivered"]) for d in again] == [(200, True), (200, True)]
    [event] = [e for e in hooked.events() if e["data"]["object"]["id"] == first.id]
    one = hooked.control("POST", "webhooks/redeliver", {"id": event["id"]})["data"]
    assert [d["event"] for d in one] == [event["id"]]
    # Answered only once the endpoint had: five deliveries, three of one event, all valid.
    events = [verified(d) for d in receiver.received]
    assert len(events) == 5
    assert [e.id for e in events].count(event["id"]) == 3
    unknown = httpx.post(f"{hooked.url}/_test/webhooks/redeliver", json={"id": "evt_nope"})
    assert unknown.status_code == 404


def test_without_an_endpoint_events_are_kept_but_not_sent(
    client: stripe.StripeClient, server: Server, receiver: Receiver
) -> None:
    client.v1.payment_intents.create(params=VISA)
    assert [e["type"] for e in server.events()] == ["payment_intent.succeeded"]
    view = server.webhooks()
    assert (view["url"], view["pending"], view["deliveries"]) == ("", 0, [])
    refused = httpx.post(f"{server.url}/_test/webhooks/redeliver")
    assert refused.status_code == 400
    assert "No webhook endpoint" in refused.json()["error"]["message"]
    # A test can point a running server at its own endpoint, with its own secret.
    server.control("POST", "webhooks", {"url": receiver.url, "secret": "whsec_mine"})
    server.control("POST", "webhooks/redeliver")
    [delivery] = receiver.received
    assert verified(delivery, "whsec_mine").type == "payment_intent.succeeded"


def test_sign_gives_a_body_and_header_to_post_by_hand(
    client: stripe.StripeClient, server: Server
) -> None:
    client.v1.payment_intents.create(params=VISA)
    [event] = server.events("payment_intent.succeeded")
    signed = server.control("POST", "webhooks/sign", {"id": event["id"], "secret": SECRET})
    verified_event = stripe.Webhook.construct_event(signed["payload"], signed["signature"], SECRET)
    assert verified_event.id == event["id"]
    stale = server.control(
        "POST", "webhooks/sign", {"id": event["id"], "secret": SECRET, "timestamp": 1_000_000}
    )
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.Webhook.construct_event(stale["payload"], stale["signature"], SECRET)
    assert server.events("charge.refunded") == []
    bad = httpx.post(f"{server.url}/_test/webhooks/sign", json={"id": event["id"], "x": 1})
    assert bad.status_code == 400


def test_config_from_the_environment() -> None:
    config = Config.from_env(
        {
            "WEBHOOK_URL": " http://h/api/payments/webhook ",
            "STRIPE_WEBHOOK_SECRET": "whsec_x",
            "WEBHOOK_MAX_ATTEMPTS": "7",
            "WEBHOOK_RETRY_SECONDS": "0.5",
        }
    )
    assert (config.url, config.secret, config.max_attempts, config.retry_seconds) == (
        "http://h/api/payments/webhook",
        "whsec_x",
        7,
        0.5,
    )
    default = Config.from_env({})
    assert (default.url, default.max_attempts, default.retry_seconds) == ("", 5, 1.0)
    assert default.secret.startswith("whsec_")  # made up, and shown by GET /_test/webhooks


@pytest.fixture
def process(receiver: Receiver, tmp_path: Path) -> Iterator[str]:
    """`python -m fakestripe` configured by its environment, as the dev runner starts it."""
    env = {
        "WEBHOOK_URL": receiver.url,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "WEBHOOK_RETRY_SECONDS": "0.02",
        "WEBHOOK_MAX_ATTEMPTS": "2",
    }
    with (tmp_path / "fakestripe.log").open("wb") as log:
        server = start_stripe(free_port(), log, env)
        try:
            yield server.url
        finally:
            server.stop()


def test_the_process_sends_webhooks_as_its_environment_says(
    process: str, receiver: Receiver, tmp_path: Path
) -> None:
    client = stripe.StripeClient("sk_test_x", base_addresses={"api": process})
    receiver.answers = [404, 404]  # never delivered: one line in the log, not one per attempt
    pi = client.v1.payment_intents.create(params=VISA)
    deliveries = receiver.wait_for(2)
    assert {verified(d).data.object["id"] for d in deliveries} == {pi.id}
    until(Server(process).settled)
    client.v1.refunds.create(params={"payment_intent": pi.id})
    [*_, refunded] = receiver.wait_for(3)
    assert verified(refunded).type == "charge.refunded"
    until(Server(process).settled)
    log = (tmp_path / "fakestripe.log").read_text()
    assert log.count("not delivered") == 1, log
    assert "after 2 attempts; last: 404" in log
    assert "delivered: 200" in log

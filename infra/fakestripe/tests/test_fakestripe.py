"""The fake driven by the real Stripe SDK: what the payments service relies on acts as on Stripe."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

import httpx
import pytest
import stripe

from fakestripe.app import parse_form

from .support import Server

AUTO = {"enabled": True, "allow_redirects": "never"}


def test_visa_charges_the_amount_in_the_currency(client: stripe.StripeClient) -> None:
    pi = client.v1.payment_intents.create(
        params={
            "amount": 2000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            "metadata": {"orderId": "o1"},
            "description": "Ticket",
        }
    )
    assert pi.id.startswith("pi_")
    assert (pi.status, pi.amount, pi.currency) == ("succeeded", 2000, "usd")
    assert pi.latest_charge is not None and str(pi.latest_charge).startswith("ch_")
    assert pi.metadata.to_dict() == {"orderId": "o1"}
    assert pi.automatic_payment_methods is not None
    assert pi.automatic_payment_methods.to_dict() == {"enabled": True, "allow_redirects": "never"}


@pytest.mark.parametrize("token", ["tok_visa", "pm_card_mastercard", "tok_mastercard"])
def test_other_good_cards_succeed(client: stripe.StripeClient, token: str) -> None:
    params: stripe.params.PaymentIntentCreateParams = {
        "amount": 50,
        "currency": "usd",
        "payment_method": token,
        "confirm": True,
    }
    assert client.v1.payment_intents.create(params=params).status == "succeeded"


@pytest.mark.parametrize(
    ("token", "decline_code", "message"),
    [
        ("pm_card_chargeDeclined", "generic_decline", "Your card was declined."),
        ("tok_chargeDeclined", "generic_decline", "Your card was declined."),
        (
            "pm_card_chargeDeclinedInsufficientFunds",
            "insufficient_funds",
            "Your card has insufficient funds.",
        ),
    ],
)
def test_declined_card_raises_card_error(
    client: stripe.StripeClient, server: Server, token: str, decline_code: str, message: str
) -> None:
    with pytest.raises(stripe.CardError) as caught:
        client.v1.payment_intents.create(
            params={"amount": 2000, "currency": "usd", "payment_method": token, "confirm": True}
        )
    error = caught.value
    assert (error.http_status, error.code, error.user_message) == (402, "card_declined", message)
    body = cast(dict[str, Any], error.json_body)["error"]
    assert body["decline_code"] == decline_code
    assert body["payment_intent"]["status"] == "requires_payment_method"
    assert body["request_log_url"].startswith("https://dashboard.stripe.com/test/logs/req_")
    [intent] = server.intents()
    assert intent["id"] == body["payment_intent"]["id"]


def test_same_key_same_params_replays_one_intent(
    client: stripe.StripeClient, server: Server
) -> None:
    key = f"order-{uuid.uuid4()}"
    params: stripe.params.PaymentIntentCreateParams = {
        "amount": 1500,
        "currency": "usd",
        "payment_method": "pm_card_visa",
        "confirm": True,
    }
    first = client.v1.payment_intents.create(params=params, options={"idempotency_key": key})
    second = client.v1.payment_intents.create(params=params, options={"idempotency_key": key})
    assert first.id == second.id
    assert second.last_response is not None
    assert second.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(server.intents()) == 1


def test_same_key_other_params_is_an_idempotency_error(client: stripe.StripeClient) -> None:
    key = f"order-{uuid.uuid4()}"
    client.v1.payment_intents.create(
        params={
            "amount": 1500,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
        },
        options={"idempotency_key": key},
    )
    with pytest.raises(stripe.IdempotencyError, match="same parameters"):
        client.v1.payment_intents.create(
            params={"amount": 1600, "currency": "usd", "payment_method": "pm_card_visa"},
            options={"idempotency_key": key},
        )


def test_decline_is_replayed_and_a_new_key_is_a_new_attempt(
    client: stripe.StripeClient, server: Server
) -> None:
    declined: stripe.params.PaymentIntentCreateParams = {
        "amount": 2000,
        "currency": "usd",
        "payment_method": "pm_card_chargeDeclined",
        "confirm": True,
    }
    for _ in range(2):
        with pytest.raises(stripe.CardError):
            client.v1.payment_intents.create(params=declined, options={"idempotency_key": "o1-a"})
    assert len(server.intents()) == 1
    pi = client.v1.payment_intents.create(
        params={**declined, "payment_method": "pm_card_visa"}, options={"idempotency_key": "o1-b"}
    )
    assert pi.status == "succeeded"
    assert [i["status"] for i in server.intents()] == ["requires_payment_method", "succeeded"]


# The SDK's HTTPXClient posts its form as `data=<str>`, which httpx deprecates.
@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
async def test_concurrent_requests_with_one_key_create_one_intent(
    async_client: stripe.StripeClient, server: Server
) -> None:
    async def pay() -> stripe.PaymentIntent:
        return await async_client.v1.payment_intents.create_async(
            params={
                "amount": 2000,
                "currency": "usd",
                "payment_method": "pm_card_visa",
                "confirm": True,
                "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            },
            options={"idempotency_key": "order-o1-pm_card_visa"},
        )

    results = await asyncio.gather(*(pay() for _ in range(10)))
    assert len({pi.id for pi in results}) == 1
    assert len(await asyncio.to_thread(server.intents)) == 1


def test_retrieve(client: stripe.StripeClient) -> None:
    pi = client.v1.payment_intents.create(
        params={"amount": 999, "currency": "usd", "payment_method": "tok_visa", "confirm": True}
    )
    again = client.v1.payment_intents.retrieve(pi.id)
    assert (again.id, again.status, again.amount) == (pi.id, "succeeded", 999)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.retrieve("pi_nope")
    assert (caught.value.http_status, caught.value.code) == (404, "resource_missing")


def test_refund(client: stripe.StripeClient) -> None:
    pi = client.v1.payment_intents.create(
        params={
            "amount": 2000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    refund = client.v1.refunds.create(params={"payment_intent": pi.id})
    assert refund.id.startswith("re_")
    assert (refund.status, refund.payment_intent, refund.amount) == ("succeeded", pi.id, 2000)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"payment_intent": pi.id})
    assert caught.value.code == "charge_already_refunded"


def test_bad_api_key_is_an_authentication_error(server: Server) -> None:
    for key in ["sk_live_abcdefghijklmnop", "pk_test_x"]:
        bad = stripe.StripeClient(key, base_addresses={"api": server.url})
        with pytest.raises(stripe.AuthenticationError, match="Invalid API Key provided"):
            bad.v1.payment_intents.retrieve("pi_x")
    response = httpx.post(f"{server.url}/v1/payment_intents", data={"amount": "2000"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_payment_method_is_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.create(
            params={"amount": 2000, "currency": "usd", "payment_method": "pm_x", "confirm": True}
        )
    error = caught.value
    assert (error.http_status, error.code, error.param) == (
        400,
        "resource_missing",
        "payment_method",
    )
    assert error.user_message == "No such PaymentMethod: 'pm_x'"


def test_amount_and_currency_are_validated(client: stripe.StripeClient, server: Server) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.create(params={"amount": 49, "currency": "usd"})
    assert caught.value.code == "amount_too_small"
    assert caught.value.user_message == "Amount must be at least $0.50 usd"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.create(params={"amount": 2000})  # type: ignore[typeddict-item]
    assert (caught.value.code, caught.value.param) == ("parameter_missing", "currency")
    assert server.intents() == []


def test_validation_errors_are_not_stored_under_the_key(client: stripe.StripeClient) -> None:
    """As on Stripe, a request that failed validation can be retried fixed with its key."""
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.create(
            params={"amount": 10, "currency": "usd"}, options={"idempotency_key": "k"}
        )
    pi = client.v1.payment_intents.create(
        params={"amount": 100, "currency": "usd"}, options={"idempotency_key": "k"}
    )
    assert pi.status == "requires_payment_method"


def test_wire_format_headers_and_unknown_routes(server: Server) -> None:
    headers = {"Authorization": "Bearer sk_test_x", "Stripe-Version": "2024-06-20"}
    form = "amount=700&currency=usd&metadata[orderId]=o9&metadata[userId]=u1"
    response = httpx.post(
        f"{server.url}/v1/payment_intents",
        content=form,
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert response.headers["Request-Id"].startswith("req_")
    assert response.headers["Stripe-Version"] == "2024-06-20"
    assert response.json()["metadata"] == {"orderId": "o9", "userId": "u1"}
    missing = httpx.get(f"{server.url}/v1/customers", headers=headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["message"].startswith("Unrecognized request URL")
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}


def test_parse_form_nests_bracket_keys() -> None:
    pairs = [("a", "1"), ("m[x]", "2"), ("m[y]", "3"), ("d[e][f]", "4")]
    assert parse_form(pairs) == {"a": "1", "m": {"x": "2", "y": "3"}, "d": {"e": {"f": "4"}}}

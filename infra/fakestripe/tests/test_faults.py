"""Faults on demand (`/_test/faults`), driven through the real Stripe SDK, as race tests of the
payments service use them: slow, failing, failing after the work, and held at a gate."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import httpx
import pytest
import stripe

from .support import Receiver, Server, until

T = TypeVar("T")
PAY = "POST /v1/payment_intents"
VISA: stripe.params.PaymentIntentCreateParams = {
    "amount": 2000,
    "currency": "usd",
    "payment_method": "pm_card_visa",
    "confirm": True,
    "metadata": {"orderId": "o1"},
}


class Background:
    """Runs SDK calls in other threads, so a test can look while they are in flight."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool

    def __call__(self, call: Callable[[], T]) -> Future[T]:
        return self.pool.submit(call)


@pytest.fixture
def background() -> Iterator[Background]:
    with ThreadPoolExecutor(4) as pool:
        yield Background(pool)


def held(server: Server) -> int:
    count: int = server.control("GET", "faults")["held"]
    return count


def test_a_delay_holds_matching_requests_that_long(
    client: stripe.StripeClient, server: Server
) -> None:
    fault = server.control("POST", "faults", {"delay_seconds": 0.4, "match": PAY, "count": 1})
    assert (fault["left"], fault["applied"]) == (1, 0)
    started = time.monotonic()
    client.v1.payment_intents.create(params=VISA)
    assert time.monotonic() - started >= 0.4
    assert server.control("GET", "faults")["faults"] == []  # its count is used up


def test_fail_answers_stripes_api_error_without_doing_the_work(
    client: stripe.StripeClient, server: Server
) -> None:
    server.control("POST", "faults", {"fail": 500, "match": PAY, "count": 1})
    with pytest.raises(stripe.APIError) as caught:
        client.v1.payment_intents.create(params=VISA, options={"idempotency_key": "a1"})
    assert caught.value.http_status == 500
    body = caught.value.json_body
    assert isinstance(body, dict) and body["error"]["type"] == "api_error"
    assert server.intents() == []
    # Nothing was stored under the key: the retry does the work.
    pi = client.v1.payment_intents.create(params=VISA, options={"idempotency_key": "a1"})
    assert pi.status == "succeeded"
    assert [i["id"] for i in server.intents()] == [pi.id]


def test_fail_after_processing_keeps_the_charge_for_a_retry_with_its_key(
    hooked: Server, hooked_client: stripe.StripeClient, receiver: Receiver
) -> None:
    hooked.control("POST", "faults", {"fail_after_processing": True, "match": PAY, "count": 1})
    with pytest.raises(stripe.APIError) as caught:
        hooked_client.v1.payment_intents.create(params=VISA, options={"idempotency_key": "o1:v"})
    assert caught.value.http_status == 500
    [charged] = hooked.intents()  # the client thinks it failed; the card was charged
    assert charged["status"] == "succeeded"
    again = hooked_client.v1.payment_intents.create(
        params=VISA, options={"idempotency_key": "o1:v"}
    )
    assert again.id == charged["id"]
    assert again.metadata.to_dict() == {"orderId": "o1"}
    assert again.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(hooked.intents()) == 1
    # Stripe still tells the webhook endpoint, once.
    [delivery] = receiver.wait_for(1)
    assert b'"payment_intent.succeeded"' in delivery.body
    until(hooked.settled)
    assert len(receiver.received) == 1


def test_hold_keeps_a_request_in_flight_until_released(
    client: stripe.StripeClient,
    server: Server,
    background: Background,
) -> None:
    server.control("POST", "faults", {"hold": True, "match": PAY, "count": 1})
    paying = background(lambda: client.v1.payment_intents.create(params=VISA))
    until(lambda: held(server) == 1)  # "the payment call is in flight"
    view = server.control("GET", "faults")
    assert view["held_requests"][0]["route"] == PAY
    assert view["held_requests"][0]["stage"] == "request"
    assert server.intents() == []  # held before the work
    assert not paying.done()
    released = server.control("POST", "faults/release")
    assert released["released"] == 1
    assert paying.result(10).status == "succeeded"
    assert held(server) == 0


def test_hold_after_processing_holds_the_answer_of_done_work(
    client: stripe.StripeClient,
    server: Server,
    background: Background,
) -> None:
    rule = {"hold": True, "after_processing": True, "match": PAY, "count": 1}
    server.control("POST", "faults", rule)
    paying = background(lambda: client.v1.payment_intents.create(params=VISA))
    until(lambda: held(server) == 1)
    assert [i["status"] for i in server.intents()] == ["succeeded"]  # charged, answer held
    assert server.control("GET", "faults")["held_requests"][0]["stage"] == "answer"
    server.control("POST", "faults/release")
    assert paying.result(10).id == server.intents()[0]["id"]


def test_release_a_count_lets_the_oldest_go_first(
    client: stripe.StripeClient,
    server: Server,
    background: Background,
) -> None:
    server.control("POST", "faults", {"hold": True, "match": PAY})  # every one, until cleared
    first = background(lambda: client.v1.payment_intents.create(params=VISA))
    until(lambda: held(server) == 1)
    second = background(lambda: client.v1.payment_intents.create(params={**VISA, "amount": 3000}))
    until(lambda: held(server) == 2)
    assert server.control("POST", "faults/release", {"count": 1})["held"] == 1
    assert first.result(10).amount == 2000
    assert not second.done()
    third = background(lambda: client.v1.payment_intents.create(params=VISA))
    until(lambda: held(server) == 2)  # the rule stays in force
    cleared = server.control("DELETE", "faults")  # drops it and lets everyone go
    assert cleared == {"faults": [], "held": 0, "held_requests": []}
    assert second.result(10).amount == 3000
    assert third.result(10).status == "succeeded"
    client.v1.payment_intents.create(params=VISA)  # not held any more


def test_match_and_count_choose_the_requests(client: stripe.StripeClient, server: Server) -> None:
    server.control("POST", "faults", {"fail": 503, "match": "POST /v1/refunds", "count": 2})
    pi = client.v1.payment_intents.create(params=VISA)  # not matched
    for _ in range(2):
        with pytest.raises(stripe.APIError):
            client.v1.refunds.create(params={"payment_intent": pi.id})
    refund = client.v1.refunds.create(params={"payment_intent": pi.id})
    assert refund.status == "succeeded"
    # A path alone matches every method, paths under it included.
    server.control("POST", "faults", {"fail": 500, "match": "/v1/payment_intents", "count": 1})
    with pytest.raises(stripe.APIError):
        client.v1.payment_intents.retrieve(pi.id)
    assert client.v1.payment_intents.retrieve(pi.id).id == pi.id


def test_fail_429_is_stripes_rate_limit(client: stripe.StripeClient, server: Server) -> None:
    server.control("POST", "faults", {"fail": 429, "count": 1})  # no match: any API request
    with pytest.raises(stripe.RateLimitError):
        client.v1.payment_intents.create(params=VISA)
    assert httpx.get(f"{server.url}/_test/payment_intents").status_code == 200  # never faulted


def test_a_delay_before_a_concurrent_twin_still_charges_once(
    client: stripe.StripeClient,
    server: Server,
    background: Background,
) -> None:
    """The first request, held, times out on the client; its retry with the same key charges;
    when the first is let go it replays the same PaymentIntent."""
    server.control("POST", "faults", {"hold": True, "match": PAY, "count": 1})
    slow = background(
        lambda: client.v1.payment_intents.create(params=VISA, options={"idempotency_key": "o1:k"})
    )
    until(lambda: held(server) == 1)
    retry = client.v1.payment_intents.create(params=VISA, options={"idempotency_key": "o1:k"})
    server.control("POST", "faults/release")
    assert slow.result(10).id == retry.id
    assert len(server.intents()) == 1


def test_bad_fault_bodies_are_refused(server: Server) -> None:
    bodies: list[object] = [
        {"count": 1},  # does nothing
        {"fail": 200},
        {"delay_seconds": -1},
        {"fail": 500, "count": 0},
        {"fail": 500, "typo": True},
        {"fail": 500, "match": "v1/refunds"},
        [],
    ]
    for body in bodies:
        answer = httpx.post(f"{server.url}/_test/faults", json=body)
        assert answer.status_code == 400, body
        assert answer.json()["error"]["type"] == "invalid_request_error"
    garbled = httpx.post(f"{server.url}/_test/faults", content=b"{not json")
    assert garbled.status_code == 400
    assert server.control("GET", "faults")["faults"] == []


def test_a_held_request_does_not_block_other_routes(
    client: stripe.StripeClient,
    server: Server,
    background: Background,
) -> None:
    server.control("POST", "faults", {"hold": True, "match": "POST /v1/refunds"})
    pi = client.v1.payment_intents.create(params=VISA)
    refunding = background(lambda: client.v1.refunds.create(params={"payment_intent": pi.id}))
    until(lambda: held(server) == 1)
    assert client.v1.payment_intents.retrieve(pi.id).status == "succeeded"
    done = threading.Event()
    refunding.add_done_callback(lambda _: done.set())
    server.control("DELETE", "faults")
    assert done.wait(10)
    assert server.listing("refunds")[0]["payment_intent"] == pi.id

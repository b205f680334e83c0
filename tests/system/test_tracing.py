"""One purchase is one trace across the services, read from the span files the dev runner has
every service write (the services are separate processes, so an in-memory exporter here would
see none of their spans)."""

import asyncio
import secrets

from devstack.stack import Stack
from devstack.testing import start_stack
from ticketing_common.spanfile import Span, read_spans
from ticketing_testing import eventually

from .support import User


async def _purchase(stack: Stack, traceparent: str) -> tuple[str, str]:
    """Sign up, sell, order and pay through the ingress, every request sent in one trace."""
    seller, buyer = User(stack.url), User(stack.url)
    for user in (seller, buyer):
        user.http.headers["traceparent"] = traceparent
        await user.signup()
    try:
        ticket = await seller.sell("traced gig", 12)
        order = await buyer.order_when_orderable(ticket["id"])

        async def paid():
            body = {"orderId": order["id"], "token": "pm_card_visa"}
            answer = await buyer.http.post("/api/payments", json=body)
            return None if answer.status_code == 404 else answer

        assert (await eventually(paid)).status_code == 201
        return str(order["id"]), str(ticket["id"])
    finally:
        await seller.close()
        await buyer.close()


def _accepted(spans: list[Span], route: str, caller: str) -> Span:
    """The one server span of `route` that answered 201. A try sent before the service had
    replicated what it needs was a 404, retried in the same trace: each continues the caller."""
    tries = [s for s in spans if s["name"] == route and s["kind"] == "SERVER"]
    assert {s["parentSpanId"] for s in tries} == {caller}
    (accepted,) = [s for s in tries if s["attributes"]["http.status_code"] == 201]
    assert {s["attributes"]["http.status_code"] for s in tries if s is not accepted} <= {404}
    return accepted


def test_one_purchase_is_one_trace_and_listeners_continue_the_publishing_span(tmp_path):
    trace_id = secrets.token_hex(16)
    caller = secrets.token_hex(8)
    with start_stack(tmp_path, {"EXPIRATION_WINDOW_SECONDS": "6"}) as stack:
        order_id, ticket_id = asyncio.run(_purchase(stack, f"00-{trace_id}-{caller}-01"))

        async def whole_trace():
            spans = [s for s in read_spans(stack.data / "traces") if s["traceId"] == trace_id]
            names = {(s["service"], s["name"]) for s in spans}
            done = {("expiration", "expire_order"), ("orders", "process expiration.complete")}
            return spans if done <= names else None

        spans = asyncio.run(eventually(whole_trace, within=60))

    by_id = {s["spanId"]: s for s in spans}
    assert {s["service"] for s in spans} >= {"auth", "tickets", "orders", "payments", "expiration"}
    placed = _accepted(spans, "POST /api/orders", caller)
    created = [s for s in spans if s["name"] == "process order.created"]
    assert {s["service"] for s in created} == {"tickets", "payments", "expiration"}
    for span in created:  # each listener's span is a child of the request that published
        assert span["parentSpanId"] == placed["spanId"]
        # the aggregate each applies it to: tickets the ticket, the others the order
        mine = ticket_id if span["service"] == "tickets" else order_id
        assert span["attributes"]["ticketing.key"] == mine
    for span in spans:
        if span["kind"] == "CONSUMER":  # every event continues the span that published it
            assert span["parentSpanId"] in by_id, span
    (job,) = [s for s in spans if s["name"] == "expire_order"]
    assert by_id[job["parentSpanId"]]["name"] == "process order.created"  # scheduled there
    (complete,) = [s for s in spans if s["name"] == "process payment.created"]
    assert complete["service"] == "orders"
    assert by_id[complete["parentSpanId"]]["service"] == "payments"
    _accepted(spans, "POST /api/payments", caller)

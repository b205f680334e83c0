"""Metrics on the real stack: one purchase through the ingress, then each service's /metrics
scraped straight on its own port (never through the ingress, which answers 404 there). The
stack is shared by the session, so counts are compared with a scrape taken before."""

import httpx

from ticketing_common.registry import installed_services
from ticketing_testing import METRIC_FAMILIES, Scrape, scrape

from .money import order_of, pay, until

SERVICES = [s.name for s in installed_services()]
# The outbox collections and durables each service reports on.
OUTBOXES = {"tickets": "tickets", "orders": "orders", "payments": "orders"}
DURABLES = {
    "tickets": {"tickets-order-created", "tickets-order-cancelled"},
    "orders": {
        "orders-ticket-created",
        "orders-ticket-updated",
        "orders-expiration-complete",
        "orders-payment-created",
        "orders-payment-refunded",
    },
    "payments": {"payments-order-created", "payments-order-cancelled"},
    "expiration": {"expiration-order-created"},
}


async def scrape_all(stack) -> dict[str, Scrape]:
    found = {}
    for name in SERVICES:
        async with httpx.AsyncClient(base_url=stack.service_urls[name], timeout=10) as http:
            found[name] = await scrape(http)
        missing = set(METRIC_FAMILIES) - found[name].families
        assert not missing, f"{name} lacks {missing}"
    return found


def lag(found: dict[str, Scrape]) -> float:
    """Messages not yet delivered or not yet acked, over every durable of every service."""
    return sum(
        s.value("ticketing_consumer_pending") + s.value("ticketing_consumer_ack_pending")
        for s in found.values()
    )


def outbox(found: dict[str, Scrape]) -> float:
    return sum(s.value("ticketing_outbox_pending") for s in found.values())


def grew(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


async def settled(stack) -> dict[str, Scrape]:
    """A scrape once every consumer has caught up and every outbox is empty (read at the
    scrape, so this is a wait on the stack, not on a refresh timer)."""

    async def check() -> dict[str, Scrape] | None:
        found = await scrape_all(stack)
        return found if lag(found) == 0 and outbox(found) == 0 else None

    found: dict[str, Scrape] = await until(check, within=30)
    return found


async def test_one_purchase_shows_in_every_services_metrics(stack, users) -> None:
    before = await settled(stack)  # what earlier tests set going has landed

    seller, buyer = await users(), await users()
    ticket = await seller.sell("metered gig", 12)
    order = await buyer.order_when_orderable(ticket["id"])

    async def paid() -> httpx.Response | None:
        response = await pay(buyer, order["id"])
        return None if response.status_code == 404 else response  # not replicated yet

    response = await until(paid)
    assert response.status_code == 201, response.text

    async def complete() -> bool:
        return (await order_of(buyer, order["id"]))["status"] == "complete"

    await until(complete, within=30)
    assert (await buyer.get("/")).status_code == 200  # a page of the client

    after = await settled(stack)  # consumer lag and outboxes back to 0

    outcomes = "ticketing_payments_total"
    assert grew(before["payments"], after["payments"], outcomes, outcome="succeeded") == 1
    assert grew(before["payments"], after["payments"], outcomes, outcome="declined") == 0
    assert grew(before["payments"], after["payments"], outcomes, outcome="refunded") == 0
    for name in SERVICES:
        dead = grew(before[name], after[name], "ticketing_events_dead_lettered_total")
        assert dead == 0, name

    # The purchase's events, published by their owners and applied by their listeners.
    published = "ticketing_events_published_total"
    assert grew(before["tickets"], after["tickets"], published, subject="ticket.created") == 1
    assert grew(before["orders"], after["orders"], published, subject="order.created") == 1
    assert grew(before["payments"], after["payments"], published, subject="payment.created") == 1
    applied = "ticketing_events_applied_total"
    assert grew(before["orders"], after["orders"], applied, subject="ticket.created") == 1
    assert grew(before["orders"], after["orders"], applied, subject="payment.created") == 1
    for name in ("tickets", "payments", "expiration"):
        assert grew(before[name], after[name], applied, subject="order.created") == 1, name

    for name, collection in OUTBOXES.items():
        assert collection in after[name].labels("ticketing_outbox_pending", "collection")
        age = after[name].value("ticketing_outbox_oldest_pending_age_seconds")
        assert age == 0, name
    for name, durables in DURABLES.items():
        assert durables <= after[name].labels("ticketing_consumer_pending", "durable"), name

    hashes = "ticketing_argon2_hash_seconds_count"
    assert grew(before["auth"], after["auth"], hashes, operation="hash") == 2  # two sign-ups

    # Each service's HTTP histogram has the routes used, as templates.
    def routes(name: str, method: str) -> set[str]:
        count = "ticketing_http_request_duration_seconds_count"
        return {
            s.labels["route"]
            for s in after[name].samples
            if s.name == count and s.labels.get("method") == method and s.value > 0
        }

    assert "/api/users/signup" in routes("auth", "POST")
    assert "/api/tickets" in routes("tickets", "POST")
    assert "/api/orders" in routes("orders", "POST")
    assert "/api/payments" in routes("payments", "POST")
    assert "/api/orders/{order_id}" in routes("orders", "GET")
    assert "/" in routes("client", "GET")
    assert not any(order["id"] in r for name in SERVICES for r in routes(name, "GET"))


async def test_metrics_are_not_reachable_through_the_ingress(stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        for path in ("/metrics", "/metrics/"):
            response = await http.get(path)
            assert response.status_code == 404, (path, response.text)
            assert "ticketing_" not in response.text

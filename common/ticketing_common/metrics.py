"""Prometheus metrics: every family a service serves, in its app's own registry (a test process
builds many apps, and each must count apart), scraped at `/metrics` on the service's own port;
the ingress answers 404 there."""

from __future__ import annotations

import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send

from ticketing_common.asgi import HttpMiddleware, TrackedSend

# No `_created` series beside each counter and histogram: Prometheus does not read them from the
# text format, and they would double every scrape.
disable_created_metrics()  # type: ignore[no-untyped-call]

# A request's method as a label; any other is `other`, so a client cannot grow the label set.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """One app's metric families. Every service serves them all; each family fills where its
    work is done (the Argon2 one in auth, payments' outcomes in payments)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "ticketing_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "ticketing_http_request_duration_seconds",
            "HTTP request latency by route template and method, until the response is sent",
            ["route", "method"],
            registry=r,
        )
        self.events_published = Counter(
            "ticketing_events_published",
            "Events stored by JetStream from this service (repeats it dropped not counted)",
            ["subject"],
            registry=r,
        )
        self.events_applied = Counter(
            "ticketing_events_applied",
            "Events applied and acked, by subject",
            ["subject"],
            registry=r,
        )
        self.events_redelivered = Counter(
            "ticketing_events_redelivered",
            "Deliveries of an event after its first, by subject",
            ["subject"],
            registry=r,
        )
        self.events_dead_lettered = Counter(
            "ticketing_events_dead_lettered",
            "Events given up and sent to the dead letters, by subject",
            ["subject"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "ticketing_outbox_pending",
            "Events left in the outbox past the sweep's grace (their writer did not publish "
            "them), at the last sweep",
            ["collection"],
            registry=r,
        )
        self.outbox_oldest_age = Gauge(
            "ticketing_outbox_oldest_pending_age_seconds",
            "Age of the oldest of those events at the last sweep (0 when there is none)",
            ["collection"],
            registry=r,
        )
        self.consumer_pending = Gauge(
            "ticketing_consumer_pending",
            "Messages the durable consumer has not delivered yet, read at the scrape",
            ["durable"],
            registry=r,
        )
        self.consumer_ack_pending = Gauge(
            "ticketing_consumer_ack_pending",
            "Messages delivered to the durable consumer and not acked yet, read at the scrape",
            ["durable"],
            registry=r,
        )
        self.argon2_seconds = Histogram(
            "ticketing_argon2_hash_seconds",
            "Time one Argon2 hash or verify took in its worker thread",
            ["operation"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0),
            registry=r,
        )
        self.payments = Counter(
            "ticketing_payments",
            "Payments by outcome: succeeded (charged), declined, refunded",
            ["outcome"],
            registry=r,
        )
        self.expiration_lateness = Histogram(
            "ticketing_expiration_lateness_seconds",
            "How long after it was due an expiry job published expiration:complete",
            ["subject"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )

    def exposition(self) -> bytes:
        """The Prometheus text format of every family."""
        return generate_latest(self.registry)


def route_of(scope: Scope) -> str:
    """The matched route's template with its router's prefix (`/api/orders/{order_id}`), or
    `unmatched`: never the raw path, so the label set stays bounded."""
    # FastAPI 0.16x keeps the full template of a route reached through `include_router` here;
    # `scope["route"].path` lacks the prefix then (a mount's path is whole there).
    context = scope.get("fastapi", {}).get("effective_route_context")
    template = getattr(context, "path_format", None)
    if isinstance(template, str):
        return template
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware(HttpMiddleware):
    """Counts each request by route template, method and status, and observes its latency."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracked = TrackedSend(send)
        start = time.perf_counter()
        try:
            await self.app(scope, receive, tracked)
        finally:
            route = route_of(scope)
            method = scope["method"] if scope["method"] in METHODS else "other"
            status = str(tracked.status or 500)  # no answer at all: the server's 500
            self.metrics.http_requests.labels(route, method, status).inc()
            self.metrics.http_seconds.labels(route, method).observe(time.perf_counter() - start)

"""Metrics on /metrics, as an operator reads them: HTTP requests by route template, method and
status; events applied, redelivered and dead-lettered, and each durable's lag back to 0; the
outbox gauges during an outage and after it; each app counting into its own registry."""

import pytest
from fastapi import APIRouter
from nats.errors import NoRespondersError

from ticketing_common.events import ExpirationComplete
from ticketing_common.handlers import handlers, on
from ticketing_common.listener import Retry
from ticketing_common.metrics import Metrics
from ticketing_common.moments import now_ms
from ticketing_common.outbox import OutboxRelay, with_events
from ticketing_common.service import Service
from ticketing_common.settings import NatsSettings, ServiceSettings
from ticketing_testing import METRIC_FAMILIES, eventually, scrape, serve, stream_messages

router = APIRouter()


@router.get("/things/{thing_id}")
async def thing(thing_id: str) -> dict[str, str]:
    return {"id": thing_id}


class ProbeSettings(ServiceSettings):
    service_name: str = "metrics-probe"


PROBE: Service[ProbeSettings, None] = Service(
    settings=ProbeSettings, routers=[router], api_prefix="/api/probe"
)
TEMPLATE = "/api/probe/things/{thing_id}"


async def test_requests_are_counted_by_route_template_method_and_status() -> None:
    async with serve(PROBE.build(ProbeSettings())) as client:
        for thing_id in ("a", "b", "c"):
            assert (await client.get(f"/api/probe/things/{thing_id}")).status_code == 200
        assert (await client.get("/api/probe/nowhere")).status_code == 404
        assert (await client.request("BREW", "/api/probe/things/d")).status_code >= 400
        found = await scrape(client)
    ok = {"route": TEMPLATE, "method": "GET", "status": "200"}
    assert found.value("ticketing_http_requests_total", **ok) == 3
    timed = {"route": TEMPLATE, "method": "GET"}
    assert found.value("ticketing_http_request_duration_seconds_count", **timed) == 3
    assert found.value("ticketing_http_request_duration_seconds_sum", **timed) > 0
    missing = {"route": "unmatched", "method": "GET", "status": "404"}
    assert found.value("ticketing_http_requests_total", **missing) == 1
    # A method of the client's invention is `other`: it cannot grow the label set.
    assert found.labels("ticketing_http_requests_total", "method") == {"GET", "other"}
    assert not any("things/a" in str(s.labels) for s in found.samples)  # never a raw path


async def test_every_family_is_served_in_the_text_format() -> None:
    async with serve(PROBE.build(ProbeSettings())) as client:
        found = await scrape(client)
    assert set(METRIC_FAMILIES) <= found.families


async def test_apps_built_in_one_process_count_apart() -> None:
    first, second = PROBE.build(ProbeSettings()), PROBE.build(ProbeSettings())
    async with serve(first) as client:
        await client.get("/api/probe/things/x")
        assert (await scrape(client)).value("ticketing_http_requests_total", route=TEMPLATE) == 1
    async with serve(second) as client:
        found = await scrape(client)
    assert found.value("ticketing_http_requests_total", route=TEMPLATE) == 0


# --- events: a service that listens ---------------------------------------------------------


class ListenerSettings(ServiceSettings, NatsSettings):
    service_name: str = "metrics-listener"


async def expire(event: ExpirationComplete, context: None) -> None:
    """`ok` applies at once, `later` on its second delivery, `bad` never."""
    deliveries = SEEN.setdefault(event.orderId, [])
    deliveries.append(1)
    if event.orderId == "bad" or (event.orderId == "later" and len(deliveries) == 1):
        raise Retry("not yet")


SEEN: dict[str, list[int]] = {}
LISTENING: Service[ListenerSettings, None] = Service(
    settings=ListenerSettings,
    handlers=handlers(on(ExpirationComplete, expire)),
)
DURABLE = "metrics-listener-expiration-complete"
SUBJECT = "expiration.complete"


async def test_applied_redelivered_and_dead_lettered_events_and_the_lag(nats_url, publish):
    SEEN.clear()
    settings = ListenerSettings(
        nats_url=nats_url, listener_backoff_seconds=0.05, listener_max_deliver=2
    )
    async with serve(LISTENING.build(settings)) as client:
        idle = await scrape(client)  # the durable's lag is read at each scrape: none yet
        assert idle.labels("ticketing_consumer_pending", "durable") == {DURABLE}
        assert idle.value("ticketing_consumer_pending") == 0
        assert idle.value("ticketing_consumer_ack_pending") == 0
        for order_id in ("ok", "later", "bad"):
            await publish(ExpirationComplete(orderId=order_id))

        async def settled():
            found = await scrape(client)
            done = found.value("ticketing_events_dead_lettered_total", subject=SUBJECT) == 1
            lag = found.value("ticketing_consumer_pending") + found.value(
                "ticketing_consumer_ack_pending"
            )
            return found if done and lag == 0 else None

        found = await eventually(settled)
    assert found.value("ticketing_events_applied_total", subject=SUBJECT) == 2  # ok, later
    # `later` came twice, `bad` twice (its second and last try): one redelivery each.
    assert found.value("ticketing_events_redelivered_total", subject=SUBJECT) == 2
    assert found.value("ticketing_consumer_pending", durable=DURABLE) == 0
    assert found.value("ticketing_consumer_ack_pending", durable=DURABLE) == 0
    # What this app published is its dead letter, not the test's events (another bus's).
    assert found.labels("ticketing_events_published_total", "subject") == {
        "deadletter.metrics-listener"
    }


async def test_a_consumer_whose_lag_cannot_be_read_has_no_value(nats_url, bus):
    app = LISTENING.build(ListenerSettings(nats_url=nats_url))
    async with serve(app) as client:
        assert (await scrape(client)).labels("ticketing_consumer_pending", "durable") == {DURABLE}
        await bus.js.delete_consumer(bus.stream, DURABLE)  # JetStream cannot tell its lag now
        found = await scrape(client)
    # Unknown, not the 0 it last read: an alert on the lag sees it missing.
    assert found.labels("ticketing_consumer_pending", "durable") == set()
    assert found.labels("ticketing_consumer_ack_pending", "durable") == set()


# --- the outbox ------------------------------------------------------------------------------


class DownBus:
    """The bus while NATS is down: every publish is refused."""

    async def publish(self, *args: object, **kwargs: object) -> None:
        raise NoRespondersError()


def _outbox_gauges(metrics: Metrics) -> tuple[float | None, float | None]:
    get = metrics.registry.get_sample_value
    labels = {"collection": "widgets"}
    return (
        get("ticketing_outbox_pending", labels),
        get("ticketing_outbox_oldest_pending_age_seconds", labels),
    )


async def test_the_outbox_gauges_show_events_left_unpublished_then_clear(db, bus):
    widgets = db["widgets"]
    metrics = Metrics()
    down = OutboxRelay(DownBus(), [widgets], metrics=metrics)  # type: ignore[arg-type]
    up = OutboxRelay(bus, [widgets], metrics=metrics)
    assert _outbox_gauges(metrics) == (None, None)
    await up.sweep()
    assert _outbox_gauges(metrics) == (0, 0)

    # Two events a crashed writer left half a minute ago, while NATS is down.
    events = [ExpirationComplete(orderId="o1"), ExpirationComplete(orderId="o2")]
    doc = {**with_events({"_id": "w1"}, *events), "outboxAt": now_ms() - 30_000}
    await widgets.insert_one(doc)
    with pytest.raises(NoRespondersError):
        await down.sweep()
    pending, age = _outbox_gauges(metrics)
    assert pending == 2
    assert age is not None and 30 <= age < 300

    await up.sweep()  # NATS is back: this sweep publishes them (as it read them: 2 pending)
    assert _outbox_gauges(metrics)[0] == 2
    await up.sweep()
    assert _outbox_gauges(metrics) == (0, 0)
    published = [m["data"] for m in await stream_messages(bus, SUBJECT)]
    assert published == [{"orderId": "o1"}, {"orderId": "o2"}]

"""Trace context through the outbox, the bus and a listener, on the real servers: the event
carries the trace of the request that caused it, and each delivery continues it."""

import json

import httpx
from bson import ObjectId
from fastapi import FastAPI
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind

from ticketing_common import tracing, tracing_sdk
from ticketing_common.events import TicketCreated
from ticketing_common.listener import Listener, Retry
from ticketing_common.outbox import Outbox, OutboxRelay, with_events
from ticketing_common.runtime import Runtime
from ticketing_common.settings import NatsSettings, ServiceSettings
from ticketing_testing import eventually, traced_in_memory


class Settings(ServiceSettings, NatsSettings):
    service_name: str = "tracer"


def _created(oid):
    return TicketCreated(id=str(oid), version=0, title="gig", price=10, userId="b" * 24)


async def _write_in_a_request(db, bus):
    """What a route does: one write carrying an event, inside the request's (SERVER) span."""
    relay = OutboxRelay(bus, [db.tickets], sweep_seconds=3600)
    oid = ObjectId()
    with tracing.continued(None, "POST /api/tickets", kind=SpanKind.SERVER):
        await Outbox(db.tickets, relay).insert(with_events({"_id": oid}, _created(oid)))
    stored = await db.tickets.find_one({"_id": oid})  # its outbox stays until the relay flushes
    await relay.drain()
    return oid, stored


async def _message(bus):
    info = await bus.js.stream_info(bus.stream)
    return await bus.js.get_msg(bus.stream, info.state.last_seq)


def _listener(bus, seen, retries=0, instrumented=None):
    async def apply(event):
        seen.append(event.id)
        if instrumented is not None:
            instrumented.append(is_instrumentation_enabled())
        if len(seen) <= retries:
            raise Retry("not yet")

    values = {"nats_url": "nats://unused", "listener_backoff_seconds": 0.05}
    return Listener(Runtime(Settings(**values), bus=bus), TicketCreated, apply, TicketCreated.key)


async def test_the_outbox_entry_and_the_message_carry_the_requests_traceparent(spans, db, bus):
    oid, stored = await _write_in_a_request(db, bus)
    (request,) = spans.get_finished_spans()
    (entry,) = stored["outbox"].values()
    trace_id, span_id = (
        format(request.context.trace_id, "032x"),
        format(request.context.span_id, "016x"),
    )
    assert entry["traceparent"].startswith(f"00-{trace_id}-{span_id}-")  # sampled (and random)
    message = await _message(bus)
    assert message.headers["traceparent"] == entry["traceparent"]
    assert json.loads(message.data)["id"] == str(oid)


async def test_each_delivery_is_a_consumer_span_child_of_the_publishing_span(spans, db, bus):
    seen: list[str] = []
    listener = _listener(bus, seen, retries=1)
    await listener.start()
    try:
        oid, _ = await _write_in_a_request(db, bus)
        await eventually(lambda: _async(len(seen) == 2))

        def consumers():
            return [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]

        first, second = await eventually(
            lambda: _async(consumers() if len(consumers()) == 2 else None)
        )
    finally:
        await listener.stop()
    (request,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    for span in (first, second):
        assert span.context.trace_id == request.context.trace_id
        assert span.parent.span_id == request.context.span_id
        assert span.name == "process ticket.created"
        assert span.attributes["ticketing.key"] == str(oid)
    assert [
        first.attributes["ticketing.deliveries"],
        second.attributes["ticketing.deliveries"],
    ] == [1, 2]
    assert first.events[0].name == "exception"  # the Retry, recorded on the first delivery


async def test_with_tracing_off_nothing_is_stored_or_sent(db, bus):
    assert not tracing.enabled()
    _, stored = await _write_in_a_request(db, bus)
    (entry,) = stored["outbox"].values()
    assert set(entry) == {"subject", "data", "seq"}
    assert set((await _message(bus)).headers) == {"Nats-Msg-Id"}


async def _async(value):
    return value


UNSAMPLED = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-00"
SAMPLED = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"


async def _post_things(db, bus, sampler, requests):
    """POST /things to an app served as a service serves it, each request's ticket written with
    its event; the spans recorded, and for each request its outbox entry's traceparent and
    whether instrumentation was on inside the route."""
    relay = OutboxRelay(bus, [db.tickets], sweep_seconds=3600)
    app = FastAPI()
    inside: dict[str, bool] = {}

    @app.post("/things")
    async def create() -> dict[str, str]:
        oid = ObjectId()
        inside[str(oid)] = is_instrumentation_enabled()
        await Outbox(db.tickets, relay).insert(with_events({"_id": oid}, _created(oid)))
        return {"id": str(oid)}

    with traced_in_memory(sampler) as (provider, exporter):
        transport = httpx.ASGITransport(app=tracing_sdk.instrumented(app, provider))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            ids = [(await http.post("/things", headers=h)).json()["id"] for h in requests]
    seen = []
    for oid in ids:
        (entry,) = (await db.tickets.find_one({"_id": ObjectId(oid)}))["outbox"].values()
        seen.append((entry["traceparent"], inside[oid]))
    return exporter.get_finished_spans(), seen


async def test_only_requests_of_sampled_traces_go_through_the_instrumentation(db, bus):
    ratio = TraceIdRatioBased(0.5)
    spans, seen = await _post_things(db, bus, ParentBased(ratio), [{}] * 40)
    servers = {s.context.trace_id: s for s in spans if s.kind == SpanKind.SERVER}
    assert len(servers) == len(spans)  # a quiet request starts no span, a sampled one just its own
    sampled = 0
    for traceparent, instrumented in seen:
        _, trace_hex, span_hex, flags = traceparent.split("-")
        # One decision per trace, the ratio's on the trace id the events carry on.
        chosen = ratio.should_sample(None, int(trace_hex, 16), "request").decision
        is_sampled = bool(int(flags, 16) & 1)  # the W3C sampled flag
        assert is_sampled == instrumented == (chosen is Decision.RECORD_AND_SAMPLE)
        if instrumented:
            server = servers.pop(int(trace_hex, 16))
            assert server.name == "POST /things"
            assert format(server.context.span_id, "016x") == span_hex
            sampled += 1
    assert not servers
    assert 0 < sampled < len(seen)


async def test_a_request_follows_the_sampling_of_the_trace_it_comes_in(db, bus):
    always = ParentBased(TraceIdRatioBased(1.0))
    spans, seen = await _post_things(
        db, bus, always, [{"traceparent": UNSAMPLED}, {"traceparent": SAMPLED}]
    )
    (quiet, quiet_inside), (traced, traced_inside) = seen
    assert quiet.startswith("00-" + "ab" * 16 + "-") and quiet.endswith("-00")
    assert not quiet_inside
    (server,) = spans
    assert format(server.parent.span_id, "016x") == "cd" * 8
    assert traced.startswith(f"00-{'ab' * 16}-{format(server.context.span_id, '016x')}-")
    assert int(traced[-2:], 16) & 1
    assert traced_inside


async def test_a_listener_applies_an_event_of_an_unsampled_trace_quietly(spans, db, bus):
    seen: list[str] = []
    instrumented: list[bool] = []
    listener = _listener(bus, seen, instrumented=instrumented)
    await listener.start()
    try:
        relay = OutboxRelay(bus, [db.tickets], sweep_seconds=3600)
        oid = ObjectId()
        with tracing.continued({"traceparent": UNSAMPLED}, "job"):
            await Outbox(db.tickets, relay).insert(with_events({"_id": oid}, _created(oid)))
        await relay.drain()
        await eventually(lambda: _async(str(oid) in seen))
    finally:
        await listener.stop()
    assert (await _message(bus)).headers["traceparent"].endswith("-00")
    assert instrumented == [False]
    assert spans.get_finished_spans() == ()

"""Trace context through the outbox, the bus and a listener, on the real servers: the event
carries the trace of the request that caused it, and each delivery continues it."""

import json

from bson import ObjectId
from opentelemetry.trace import SpanKind

from ticketing_common import tracing
from ticketing_common.events import TicketCreated
from ticketing_common.listener import Listener, Retry
from ticketing_common.outbox import Outbox, OutboxRelay, with_events
from ticketing_common.runtime import Runtime
from ticketing_common.settings import NatsSettings, ServiceSettings
from ticketing_testing import eventually


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


def _listener(bus, seen, retries=0):
    async def apply(event):
        seen.append(event.id)
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

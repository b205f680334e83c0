"""The expiry job continues the trace of the `order:created` that scheduled it."""

import json

from arq.jobs import Job, JobStatus
from opentelemetry.trace import SpanKind

from ticketing_common import tracing
from ticketing_testing import eventually

from .support import fast_forward, in_seconds, order_created


async def test_the_job_carries_the_trace_and_its_event_continues_it(
    spans, client, bus, pool, expirations
):
    event = order_created(in_seconds(3600))
    with tracing.continued(None, "POST /api/orders", kind=SpanKind.SERVER):
        data = json.dumps(event.payload()).encode()
        await bus.publish("order.created", data, event.id, headers=tracing.carrier())

    async def scheduled():
        return await Job(event.id, pool).status() == JobStatus.deferred

    await eventually(scheduled)
    info = await Job(event.id, pool).info()
    assert info.kwargs["trace"]["traceparent"].startswith("00-")
    await fast_forward(pool, event.id)
    await eventually(lambda: expirations.of(event.id))

    def finished():
        return {s.name: s for s in spans.get_finished_spans()}

    done = await eventually(lambda: _async(finished() if "expire_order" in finished() else None))
    request, process, job = (
        done["POST /api/orders"],
        done["process order.created"],
        done["expire_order"],
    )
    assert process.parent.span_id == request.context.span_id
    assert job.parent.span_id == process.context.span_id
    assert job.context.trace_id == request.context.trace_id
    message = await bus.js.get_last_msg(bus.stream, "expiration.complete")
    trace_id = format(request.context.trace_id, "032x")
    assert message.headers["traceparent"].split("-")[1] == trace_id


async def _async(value):
    return value

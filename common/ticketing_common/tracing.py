"""Traces with OpenTelemetry, switched on by the standard OTEL_* environment (or TRACES_DIR, the
dev runner's span files); without them nothing is instrumented and every helper here is a no-op.

The W3C trace context of the operation that caused an event travels with it: stored in its
outbox entry (`carrier`), sent as NATS headers (`headers_of`), continued by the listener that
applies it (`consuming`) and by a job scheduled for later (`continued`).

A trace that is not sampled runs with the instrumentation suppressed (`_quiet`, and
`tracing_sdk.SampledOnly` for requests): what the instrumentation does for every request,
sampled or not, is most of what tracing at 10 % would otherwise cost. It still carries its trace
context, flagged unsampled, so every part of one purchase makes the same decision.

This module needs only the OpenTelemetry API; what needs the SDK (the provider, its sampler and
exporters, the instrumented app) is in `tracing_sdk`, imported only once tracing is switched on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context, attach, detach
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import Attributes, AttributeValue

if TYPE_CHECKING:
    from fastapi import FastAPI
    from nats.aio.msg import Msg
    from opentelemetry.sdk.trace import TracerProvider
    from starlette.types import ASGIApp

# The environment switch of the dev runner's exporter: one JSON-lines file per service here.
TRACES_DIR = "TRACES_DIR"
# What an event or a job carries of its cause's trace (W3C Trace Context).
TRACE_HEADERS = ("traceparent", "tracestate")

_provider: TracerProvider | None = None
_tracer: trace.Tracer = trace.NoOpTracer()


def requested(environ: Mapping[str, str]) -> tuple[list[str], str | None]:
    """What the environment asks of tracing: the OTEL_TRACES_EXPORTER names (otlp by default
    once an OTLP endpoint is set) and the span files' folder, TRACES_DIR; neither when
    OTEL_SDK_DISABLED=true."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return [], None
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    names = environ.get("OTEL_TRACES_EXPORTER", "otlp" if endpoint else "none")
    wanted = [n for n in (n.strip().lower() for n in names.split(",")) if n not in ("none", "")]
    return wanted, environ.get(TRACES_DIR) or None


def served(service: str, app: FastAPI) -> ASGIApp:
    """What to serve: `app` as it is with tracing off; with it on, instrumented, behind the
    gate that lets only sampled requests through the instrumentation."""
    names, folder = requested(os.environ)
    if _provider is None and not names and folder is None:
        return app  # tracing off: the SDK is never imported
    from ticketing_common import tracing_sdk

    provider = tracing_sdk.configure(service)
    return app if provider is None else tracing_sdk.instrumented(app, provider)


def _unsampled(context: Context) -> bool:
    """Whether `context` carries a trace that was started and chosen not to be sampled."""
    carried = trace.get_current_span(context).get_span_context()
    return carried.is_valid and not carried.trace_flags.sampled


@contextmanager
def _quiet(context: Context) -> Iterator[None]:
    """Run the block in `context`, an unsampled trace, with every instrumentation suppressed:
    the events it causes carry the trace on, and no span is started for any of it."""
    token = attach(context)
    try:
        with suppress_instrumentation():
            yield
    finally:
        detach(token)


def enabled() -> bool:
    return _provider is not None


def provider() -> TracerProvider | None:
    """The provider traced with: the configured one, a test's, or None with tracing off."""
    return _provider


def use(provider: TracerProvider | None) -> None:
    """Trace with `provider` (a test's in-memory exporter), instrumenting nothing; None: off."""
    global _provider, _tracer
    _provider = provider
    _tracer = provider.get_tracer("ticketing") if provider else trace.NoOpTracer()


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers, to store with an event or a job; empty when
    tracing is off or nothing is traced."""
    if _provider is None:
        return {}
    found: dict[str, str] = {}
    propagate.inject(found)
    return {k: found[k] for k in TRACE_HEADERS if k in found}


def headers_of(entry: Mapping[str, Any]) -> dict[str, str]:
    """The trace headers an outbox entry (or any mapping) carries."""
    return {k: entry[k] for k in TRACE_HEADERS if isinstance(entry.get(k), str)}


def _span(
    parent: Mapping[str, str] | None, name: str, kind: SpanKind, attributes: Attributes
) -> AbstractContextManager[Any]:
    """A span continuing the trace `parent` carries; quiet if that trace is not sampled."""
    context = propagate.extract(dict(parent or {}))
    if _unsampled(context):
        return _quiet(context)
    return _tracer.start_as_current_span(name, context=context, kind=kind, attributes=attributes)


def continued(
    parent: Mapping[str, str] | None,
    name: str,
    *,
    kind: SpanKind = SpanKind.CONSUMER,
    attributes: Attributes = None,
) -> AbstractContextManager[None]:
    """Run the block in a span continuing the trace `parent` carries (a job's arguments), a new
    trace if none; a failure is recorded on the span."""
    if _provider is None:
        return nullcontext()
    return _span(parent, name, kind, attributes)


def consuming(msg: Msg, consumer: str, key: str) -> AbstractContextManager[None]:
    """Apply a NATS message in a CONSUMER span, child of the span that published it (a
    redelivery too: its headers are the same)."""
    if _provider is None:
        return nullcontext()
    headers = msg.headers or {}
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.destination.name": msg.subject,
        "messaging.consumer.group.name": consumer,
        "messaging.message.id": headers.get("Nats-Msg-Id", ""),
        "ticketing.deliveries": msg.metadata.num_delivered if msg.metadata else 1,
        "ticketing.key": key,
    }
    return _span(headers, f"process {msg.subject}", SpanKind.CONSUMER, attributes)


def current_ids() -> tuple[str, str] | None:
    """The current trace and span ids (hex), for log lines; None outside a traced operation."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")

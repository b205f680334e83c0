"""Traces with OpenTelemetry, switched on by the standard OTEL_* environment (or TRACES_DIR, the
dev runner's span files); without them nothing is instrumented and every helper here is a no-op.

The W3C trace context of the operation that caused an event travels with it: stored in its
outbox entry (`carrier`), sent as NATS headers (`headers_of`), continued by the listener that
applies it (`consuming`) and by a job scheduled for later (`continued`).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    Sampler,
    SamplingResult,
    _get_from_env_or_default,
)
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes, AttributeValue

from ticketing_common.spanfile import SpanFileExporter

if TYPE_CHECKING:
    from fastapi import FastAPI
    from nats.aio.msg import Msg

log = logging.getLogger("ticketing.tracing")

# The environment switch of the dev runner's exporter: one JSON-lines file per service here.
TRACES_DIR = "TRACES_DIR"
# What an event or a job carries of its cause's trace (W3C Trace Context).
TRACE_HEADERS = ("traceparent", "tracestate")
# Client libraries traced when installed (each service installs those it uses).
INSTRUMENTORS = (
    ("opentelemetry.instrumentation.pymongo", "PymongoInstrumentor"),
    ("opentelemetry.instrumentation.aiohttp_client", "AioHttpClientInstrumentor"),
    ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
    ("opentelemetry.instrumentation.redis", "RedisInstrumentor"),
)
UNTRACED_PATHS = "healthz,readyz"

_provider: TracerProvider | None = None
_tracer: trace.Tracer = trace.NoOpTracer()


class WithinOperations(Sampler):
    """Drops client calls made outside any request, message or job (arq's Redis polls, outbox
    sweeps, health checks): each would otherwise be a trace of its own, many a second."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        orphan = not trace.get_current_span(parent_context).get_span_context().is_valid
        if kind == SpanKind.CLIENT and orphan:
            return SamplingResult(Decision.DROP)
        return self.delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"WithinOperations{{{self.delegate.get_description()}}}"


def _exporters(service: str, environ: Mapping[str, str]) -> list[SpanExporter]:
    """The exporters the environment asks for: OTEL_TRACES_EXPORTER (otlp, console, none; otlp
    by default once an OTLP endpoint is set) and the span file under TRACES_DIR."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    names = environ.get("OTEL_TRACES_EXPORTER", "otlp" if endpoint else "none")
    exporters: list[SpanExporter] = []
    for name in (n.strip().lower() for n in names.split(",")):
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name not in ("none", ""):
            log.warning("OTEL_TRACES_EXPORTER %r is not supported here: ignored", name)
    if folder := environ.get(TRACES_DIR):
        exporters.append(SpanFileExporter(Path(folder) / f"{service}.jsonl"))
    return exporters


def configure(service: str, app: FastAPI | None = None) -> bool:
    """Switch tracing on if the environment asks for it, instrument the client libraries
    installed and `app`; True if tracing is on."""
    global _provider, _tracer
    if _provider is None:
        exporters = _exporters(service, os.environ)
        if not exporters:
            return False
        name = os.environ.get("OTEL_SERVICE_NAME") or service
        # OTEL_TRACES_SAMPLER(_ARG) as the SDK reads them (parentbased_always_on by default).
        sampler = WithinOperations(_get_from_env_or_default())
        provider = TracerProvider(sampler=sampler, resource=Resource.create({SERVICE_NAME: name}))
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_* apply
        trace.set_tracer_provider(provider)
        _provider, _tracer = provider, provider.get_tracer("ticketing")
        for module, kind in INSTRUMENTORS:
            try:
                instrumentor = getattr(importlib.import_module(module), kind)()
            except ImportError:
                continue
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(tracer_provider=provider)
    if app is not None:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=_provider,
            excluded_urls=os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", UNTRACED_PATHS),
            exclude_spans=["receive", "send"],
        )
    return True


def enabled() -> bool:
    return _provider is not None


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


@contextmanager
def _span(
    parent: Mapping[str, str] | None, name: str, kind: SpanKind, attributes: Attributes
) -> Iterator[None]:
    context = propagate.extract(dict(parent or {}))
    with _tracer.start_as_current_span(name, context=context, kind=kind, attributes=attributes):
        yield


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

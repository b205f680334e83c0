"""Traces with OpenTelemetry, switched on by the standard OTEL_* environment (or TRACES_DIR, the
dev runner's span files); without them nothing is instrumented and every helper here is a no-op.

The W3C trace context of the operation that caused an event travels with it: stored in its
outbox entry (`carrier`), sent as NATS headers (`headers_of`), continued by the listener that
applies it (`consuming`) and by a job scheduled for later (`continued`).

A trace that is not sampled runs with the instrumentation suppressed (`SampledOnly`, `_quiet`):
what the instrumentation does for every request, sampled or not, is most of what tracing at
10 % would otherwise cost. It still carries its trace context, flagged unsampled, so every part
of one purchase makes the same decision.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context, attach, detach
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    Decision,
    Sampler,
    SamplingResult,
    _get_from_env_or_default,
)
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceState
from opentelemetry.util.http import ExcludeList, parse_excluded_urls
from opentelemetry.util.types import Attributes, AttributeValue
from starlette.types import ASGIApp, Receive, Scope, Send

from ticketing_common.asgi import HttpMiddleware
from ticketing_common.spanfile import SpanFileExporter

if TYPE_CHECKING:
    from fastapi import FastAPI
    from nats.aio.msg import Msg

log = logging.getLogger("ticketing.tracing")

# The environment switch of the dev runner's exporter: one JSON-lines file per service here.
TRACES_DIR = "TRACES_DIR"
# What an event or a job carries of its cause's trace (W3C Trace Context).
TRACE_HEADERS = ("traceparent", "tracestate")
_TRACE_HEADER_NAMES = tuple(name.encode() for name in TRACE_HEADERS)
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


def configure(service: str) -> TracerProvider | None:
    """Switch tracing on if the environment asks for it and instrument the client libraries
    installed; the provider, None with tracing off."""
    global _provider, _tracer
    if _provider is None:
        exporters = _exporters(service, os.environ)
        if not exporters:
            return None
        name = os.environ.get("OTEL_SERVICE_NAME") or service
        # OTEL_TRACES_SAMPLER(_ARG) as the SDK reads them (parentbased_always_on by default).
        sampler = WithinOperations(_get_from_env_or_default())
        provider = TracerProvider(
            sampler=sampler, resource=Resource.create({SERVICE_NAME: name}), id_generator=RootIds()
        )
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
    return _provider


def served(service: str, app: FastAPI) -> ASGIApp:
    """What to serve: `app` as it is with tracing off; with it on, instrumented, behind the
    gate that lets only sampled requests through the instrumentation."""
    provider = configure(service)
    return app if provider is None else instrumented(app, provider)


def instrumented(app: FastAPI, provider: TracerProvider) -> ASGIApp:
    """`app` traced by the FastAPI instrumentation, behind `SampledOnly`."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    excluded = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", UNTRACED_PATHS)
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls=excluded, exclude_spans=["receive", "send"]
    )
    return SampledOnly(app, provider, parse_excluded_urls(excluded))


# The trace id a request's root span is to have: the one its sampling decision was made on.
_root_trace_id: ContextVar[int | None] = ContextVar("root_trace_id", default=None)


class RootIds(RandomIdGenerator):
    """Random ids, but a request's root span gets the trace id `SampledOnly` sampled it by."""

    def generate_trace_id(self) -> int:
        return _root_trace_id.get() or super().generate_trace_id()


class SampledOnly(HttpMiddleware):
    """ASGI middleware in front of the instrumented app: a request in a sampled trace (its
    `traceparent` says so, or the sampler samples the new trace) goes through the
    instrumentation; any other runs quiet, in its unsampled trace."""

    def __init__(self, app: ASGIApp, provider: TracerProvider, excluded: ExcludeList) -> None:
        super().__init__(app)
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        self.excluded = excluded

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.excluded.url_disabled(scope["path"]):
            with suppress_instrumentation():
                await self.app(scope, receive, send)
            return
        carried = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _TRACE_HEADER_NAMES
        }
        context = propagate.extract(carried)
        if not trace.get_current_span(context).get_span_context().is_valid:
            trace_id = self.ids.generate_trace_id()
            chosen = self.sampler.should_sample(None, trace_id, "request", SpanKind.SERVER)
            if chosen.decision is Decision.RECORD_AND_SAMPLE:
                token = _root_trace_id.set(trace_id)
                try:
                    await self.app(scope, receive, send)
                finally:
                    _root_trace_id.reset(token)
                return
            root = SpanContext(trace_id, self.ids.generate_span_id(), is_remote=False)
            context = trace.set_span_in_context(NonRecordingSpan(root), context)
        if _unsampled(context):
            with _quiet(context):
                await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)


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

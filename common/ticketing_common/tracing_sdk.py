"""The parts of tracing that need the OpenTelemetry SDK: the provider with its sampler and
exporters, the instrumentation of the client libraries and of the app, and the gate in front of
it (`SampledOnly`). Imported by `tracing.served` only when the environment switches tracing on,
so a service with tracing off never loads the SDK."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING

from opentelemetry import propagate, trace
from opentelemetry.context import Context
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
from opentelemetry.util.types import Attributes
from starlette.types import ASGIApp, Receive, Scope, Send

from ticketing_common import tracing
from ticketing_common.asgi import HttpMiddleware
from ticketing_common.spanfile import SpanFileExporter

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("ticketing.tracing")

_TRACE_HEADER_NAMES = tuple(name.encode() for name in tracing.TRACE_HEADERS)
# Client libraries traced when installed (each service installs those it uses).
INSTRUMENTORS = (
    ("opentelemetry.instrumentation.pymongo", "PymongoInstrumentor"),
    ("opentelemetry.instrumentation.aiohttp_client", "AioHttpClientInstrumentor"),
    ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
    ("opentelemetry.instrumentation.redis", "RedisInstrumentor"),
)
UNTRACED_PATHS = "healthz,readyz"


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
    """The exporters the environment asks for (`tracing.requested`): otlp, console, and the
    span file under TRACES_DIR."""
    names, folder = tracing.requested(environ)
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        else:
            log.warning("OTEL_TRACES_EXPORTER %r is not supported here: ignored", name)
    if folder:
        exporters.append(SpanFileExporter(Path(folder) / f"{service}.jsonl"))
    return exporters


def configure(service: str) -> TracerProvider | None:
    """Switch tracing on if the environment asks for it and instrument the client libraries
    installed; the provider, None with tracing off."""
    if tracing.provider() is None:
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
        tracing.use(provider)
        for module, kind in INSTRUMENTORS:
            try:
                instrumentor = getattr(importlib.import_module(module), kind)()
            except ImportError:
                continue
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(tracer_provider=provider)
    return tracing.provider()


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
        if tracing._unsampled(context):
            with tracing._quiet(context):
                await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)

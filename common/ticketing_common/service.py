"""The skeleton every service shares: the FastAPI app, and the runtime wiring MongoDB and NATS."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import Lifespan

from ticketing_common import tracing
from ticketing_common.errors import error_item
from ticketing_common.events import Event
from ticketing_common.handlers import Handler, Handlers
from ticketing_common.logs import RequestContextMiddleware, configure_logging
from ticketing_common.metrics import Metrics, MetricsMiddleware
from ticketing_common.runtime import Periodic, Runtime
from ticketing_common.settings import MongoSettings, NatsSettings, ServiceSettings, load_settings
from ticketing_common.web import error_response, install_error_handlers

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from ticketing_common.listener import Listener
    from ticketing_common.mongo import Document, Index

log = logging.getLogger("ticketing.service")
T = TypeVar("T")
S = TypeVar("S", bound=ServiceSettings)
C = TypeVar("C")
E = TypeVar("E", bound=Event)


async def get_runtime(request: Request) -> Runtime:
    """Dependency: the running service's connections."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def context_of(request: Request, kind: type[T]) -> T:
    """The running service's context (its `Service.context`)."""
    context = request.app.state.runtime.context
    assert isinstance(context, kind)
    return context


def context(kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A route dependency giving the service's context: `Depends(context(Storage))`."""

    async def dependency(request: Request) -> T:
        return context_of(request, kind)

    return dependency


async def get_db(request: Request) -> AsyncDatabase[Document]:
    """Dependency: the service's own database."""
    return (await get_runtime(request)).db


# The service's own endpoints (probes, metrics), on its port: the ingress does not route them.
health = APIRouter(include_in_schema=False)


@health.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is not None and await runtime.ready():
        return JSONResponse({"status": "ready"})
    failed: JSONResponse = error_response(503, [error_item("Service unavailable")])
    return failed


@health.get("/metrics")
async def metrics(request: Request) -> Response:
    """The app's metrics in the Prometheus text format, the gauges read on demand first."""
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is not None:
        await runtime.measure()
    served: Metrics = request.app.state.metrics
    return Response(served.exposition(), media_type=CONTENT_TYPE_LATEST)


def service_app(
    settings: ServiceSettings,
    *,
    title: str,
    api_prefix: str | None,
    routers: Iterable[APIRouter],
    lifespan: Lifespan[FastAPI] | None = None,
) -> FastAPI:
    """A FastAPI app with the SPEC error shapes, request ids, health and docs under its prefix.

    Without an API prefix (a service that serves no JSON API), or with `API_DOCS=false`, there
    are no docs either.
    """
    documented = bool(api_prefix) and settings.api_docs
    docs = f"{api_prefix}/docs" if documented else None
    app = FastAPI(
        title=title,
        openapi_url=f"{api_prefix}/openapi.json" if documented else None,
        docs_url=docs,
        swagger_ui_oauth2_redirect_url=f"{docs}/oauth2-redirect" if docs else None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    # Outermost, so every answer is counted (errors and refusals too) by the route it reached.
    app.state.metrics = Metrics()
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    for router in routers:
        app.include_router(router, prefix=api_prefix or "")
    app.include_router(health)
    return app


async def _until_up(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    patience: float,
    fatal: tuple[type[Exception], ...] = (),
) -> T:
    """Retry a connection at start-up: `docker stack deploy` ignores `depends_on`. What is
    `fatal` (a malformed URI) does not get better by waiting: raised at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    delay = 0.2
    while True:
        try:
            return await attempt()
        except fatal:
            raise
        except Exception as exc:
            if loop.time() >= deadline:
                raise
            log.warning("waiting for %s: %r", what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)


Resource = Callable[[Runtime], AbstractAsyncContextManager[object]]


@dataclass(frozen=True)
class Service(Generic[S, C]):
    """A service, declared once: the app, its lifespan, `python -m` and the dev runner's
    topology all come from this. A declaration states only what differs from the defaults.

    - `settings`: its Settings; their `service_name` default is the service's name.
    - `routers`, `api_prefix`: its routes, served under `/api/<name>` unless it says where
      (`""`: at the root, as the client's pages are).
    - `indexes`, `outbox`: its collections' indexes; the collections whose writes carry events.
    - `resources`: what it opens once its database and broker are up (a Stripe client, a Redis
      pool), in order, closed in reverse after the listeners stop; each may `provide` parts.
    - `context`: what its handlers and routes are given (repositories, gateways), built once.
    - `handlers`: how it applies each event type it listens to.
    - `periodic`: the jobs it runs on a timer.
    - `customize`: a last touch to the app (the client's static files and HTML errors).
    """

    settings: type[S]
    routers: Sequence[APIRouter] = ()
    api_prefix: str | None = None
    indexes: Mapping[str, Sequence[Index]] = field(default_factory=dict)
    outbox: Sequence[str] = ()
    resources: Sequence[Resource] = ()
    context: Callable[[Runtime], C] | None = None
    handlers: Handlers[C] = field(default_factory=dict)
    periodic: Sequence[Periodic] = ()
    customize: Callable[[FastAPI], None] | None = None

    def __post_init__(self) -> None:
        if self.api_prefix is None and self.routers:
            object.__setattr__(self, "api_prefix", f"/api/{self.name}")

    @property
    def name(self) -> str:
        return str(self.settings.model_fields["service_name"].default)

    @property
    def uses_mongo(self) -> bool:
        return issubclass(self.settings, MongoSettings)

    @property
    def uses_nats(self) -> bool:
        return issubclass(self.settings, NatsSettings)

    def build(self, settings: S) -> FastAPI:
        """The service's app; its lifespan connects, starts and stops everything."""

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with run_service(self, app, settings):
                yield

        app = service_app(
            settings,
            title=self.name,
            api_prefix=self.api_prefix,
            routers=self.routers,
            lifespan=lifespan,
        )
        if self.customize is not None:
            self.customize(app)
        return app

    def main(self) -> None:
        """`python -m` the service: settings from the environment, served until SIGTERM."""
        settings = load_settings(self.settings)
        serve_forever(self.build(settings), settings)


@asynccontextmanager
async def run_service(service: Service[S, C], app: FastAPI, settings: S) -> AsyncIterator[Runtime]:
    """Connect what the settings name, open the resources, start relay, listeners and timers;
    undo it all gracefully, in reverse."""
    runtime = Runtime(settings, metrics=app.state.metrics)
    started: list[Listener[Any]] = []
    timers = [p.timer(runtime) for p in service.periodic]
    timeout = settings.startup_timeout_seconds
    async with AsyncExitStack() as stack:
        try:
            # Imported in the branch that uses them: a service without MongoDB or NATS never
            # loads its driver (each is megabytes of memory).
            if isinstance(settings, MongoSettings):
                from pymongo.errors import ConfigurationError

                from ticketing_common.mongo import connect, ensure_indexes
                from ticketing_common.outbox import OUTBOX_INDEX

                wanted = {name: list(specs) for name, specs in service.indexes.items()}
                for name in service.outbox:
                    wanted.setdefault(name, []).append(OUTBOX_INDEX)
                runtime.mongo = connect(settings.mongo_uri)
                await _until_up(
                    "mongodb",
                    lambda: ensure_indexes(runtime.db, wanted),
                    timeout,
                    fatal=(ConfigurationError,),
                )
            if isinstance(settings, NatsSettings):
                from ticketing_common.bus import EventBus, StreamLimits

                runtime.bus = await _until_up(
                    "nats",
                    lambda: EventBus.connect(
                        settings.nats_url,
                        name=settings.service_name,
                        stream=settings.nats_stream,
                        limits=StreamLimits.of(settings),
                        metrics=runtime.metrics,
                    ),
                    timeout,
                )
                if service.outbox:
                    from ticketing_common.outbox import OutboxRelay

                    runtime.relay = OutboxRelay(
                        runtime.bus,
                        [runtime.db[name] for name in service.outbox],
                        sweep_seconds=settings.outbox_sweep_seconds,
                        metrics=runtime.metrics,
                    )
                    await runtime.relay.start()
            for resource in service.resources:
                await stack.enter_async_context(resource(runtime))
            if service.context is not None:
                runtime.context = service.context(runtime)
            for event_type, handler in service.handlers.items():
                listener = _listener(runtime, event_type, handler)
                await listener.start()
                started.append(listener)
                runtime.gauges.append(listener.read_lag)
            for timer in timers:
                timer.start()
            app.state.runtime = runtime
            yield runtime
        finally:
            for timer in timers:
                await timer.stop()
            for listener in started:
                await listener.stop()
            await stack.aclose()
            if runtime.relay is not None:
                await runtime.relay.stop()
            if runtime.bus is not None:
                await runtime.bus.close()
            if runtime.mongo is not None:
                await runtime.mongo.close()


def _listener(runtime: Runtime, event_type: type[E], handler: Handler[E, Any]) -> Listener[E]:
    from ticketing_common.listener import Listener  # NATS: only a service that listens loads it

    context = runtime.context

    async def apply(event: E) -> None:
        await handler.apply(event, context)

    return Listener(runtime, event_type, apply, handler.key_of)


def serve_forever(app: FastAPI, settings: ServiceSettings) -> None:
    """Run the app under uvicorn with JSON logs, until SIGTERM or Ctrl-C."""
    configure_logging(settings.service_name, settings.log_level)
    uvicorn.run(
        tracing.served(settings.service_name, app),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
    )

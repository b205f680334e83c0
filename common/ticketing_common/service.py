"""The skeleton every service shares: the FastAPI app, and the runtime wiring MongoDB and NATS."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConfigurationError
from starlette.types import Lifespan

from ticketing_common.bus import EventBus
from ticketing_common.errors import error_item, error_response, install_error_handlers
from ticketing_common.listener import Listener
from ticketing_common.logs import RequestContextMiddleware, configure_logging
from ticketing_common.mongo import Document, Index, connect, ensure_indexes
from ticketing_common.outbox import OUTBOX_INDEX, OutboxRelay
from ticketing_common.periodic import Periodic
from ticketing_common.runtime import Runtime
from ticketing_common.settings import MongoSettings, NatsSettings, ServiceSettings

log = logging.getLogger("ticketing.service")
T = TypeVar("T")


async def get_runtime(request: Request) -> Runtime:
    """Dependency: the running service's connections."""
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_db(request: Request) -> AsyncDatabase[Document]:
    """Dependency: the service's own database."""
    return (await get_runtime(request)).db


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


def service_app(
    settings: ServiceSettings,
    *,
    title: str,
    api_prefix: str | None,
    routers: Iterable[APIRouter],
    lifespan: Lifespan[FastAPI] | None = None,
) -> FastAPI:
    """A FastAPI app with the SPEC error shapes, request ids, health and docs under its prefix.

    Without an API prefix (a service that serves no JSON API) there are no docs either.
    """
    docs = f"{api_prefix}/docs" if api_prefix else None
    app = FastAPI(
        title=title,
        openapi_url=f"{api_prefix}/openapi.json" if api_prefix else None,
        docs_url=docs,
        swagger_ui_oauth2_redirect_url=f"{docs}/oauth2-redirect" if docs else None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    for router in routers:
        app.include_router(router, prefix=api_prefix or "")
    app.include_router(health)
    return app


async def _until_up(what: str, attempt: Callable[[], Awaitable[T]], patience: float) -> T:
    """Retry a connection at start-up: `docker stack deploy` ignores `depends_on`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    delay = 0.2
    while True:
        try:
            return await attempt()
        except ConfigurationError:
            raise  # a malformed URI does not get better by waiting
        except Exception as exc:
            if loop.time() >= deadline:
                raise
            log.warning("waiting for %s: %r", what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)


ListenerFactory = Callable[[Runtime], Listener[Any]]


@asynccontextmanager
async def run_service(
    app: FastAPI,
    settings: ServiceSettings,
    *,
    indexes: Mapping[str, Sequence[Index]] | None = None,
    outbox: Sequence[str] = (),
    listeners: Sequence[ListenerFactory] = (),
    periodic: Sequence[Periodic] = (),
) -> AsyncIterator[Runtime]:
    """Connect what the settings name, start relay and listeners; undo it all gracefully."""
    runtime = Runtime(settings)
    started: list[Listener[Any]] = []
    timers = [p.timer(runtime) for p in periodic]
    timeout = settings.startup_timeout_seconds
    wanted = {name: list(specs) for name, specs in (indexes or {}).items()}
    for name in outbox:
        wanted.setdefault(name, []).append(OUTBOX_INDEX)
    try:
        if isinstance(settings, MongoSettings):
            runtime.mongo = connect(settings.mongo_uri)
            await _until_up("mongodb", lambda: ensure_indexes(runtime.db, wanted), timeout)
        if isinstance(settings, NatsSettings):
            runtime.bus = await _until_up(
                "nats",
                lambda: EventBus.connect(
                    settings.nats_url,
                    name=settings.service_name,
                    stream=settings.nats_stream,
                    limits=settings.stream_limits(),
                ),
                timeout,
            )
            if outbox:
                runtime.relay = OutboxRelay(
                    runtime.bus,
                    [runtime.db[name] for name in outbox],
                    sweep_seconds=settings.outbox_sweep_seconds,
                )
                await runtime.relay.start()
            for make in listeners:
                listener = make(runtime)
                await listener.start()
                started.append(listener)
        for timer in timers:
            timer.start()
        app.state.runtime = runtime
        yield runtime
    finally:
        for timer in timers:
            await timer.stop()
        for listener in started:
            await listener.stop()
        if runtime.relay is not None:
            await runtime.relay.stop()
        if runtime.bus is not None:
            await runtime.bus.close()
        if runtime.mongo is not None:
            await runtime.mongo.close()


def service_lifespan(
    settings: ServiceSettings,
    *,
    indexes: Mapping[str, Sequence[Index]] | None = None,
    outbox: Sequence[str] = (),
    listeners: Sequence[ListenerFactory] = (),
    periodic: Sequence[Periodic] = (),
) -> Lifespan[FastAPI]:
    """The lifespan a service's `main.py` hands to its app: `run_service` around the app's life."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with run_service(
            app, settings, indexes=indexes, outbox=outbox, listeners=listeners, periodic=periodic
        ):
            yield

    return lifespan


def serve_forever(app: FastAPI, settings: ServiceSettings) -> None:
    """Run the app under uvicorn with JSON logs, until SIGTERM or Ctrl-C."""
    configure_logging(settings.service_name, settings.log_level)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )

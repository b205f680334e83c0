"""The test harness, a pytest plugin: real embedded servers once per session, a clean slate for
every test. Not part of the services' runtime (it needs pytest and httpx: the `testing` extra).

Set TEST_MONGO_URI, TEST_NATS_URL or TEST_REDIS_URL to run the same suite against servers of
your own (a real MongoDB, say) instead of the embedded ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    ExitStack,
    asynccontextmanager,
    contextmanager,
    suppress,
)
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import nats
import pytest
from bson import ObjectId
from fastapi import FastAPI
from nats.js.errors import NotFoundError as StreamNotFoundError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pymongo import MongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from ticketing_common import tracing, tracing_sdk
from ticketing_common.bus import DEAD_LETTER_STREAM, EventBus
from ticketing_common.embedded import free_port, start_mongo, start_nats, start_redis
from ticketing_common.events import Event
from ticketing_common.listener import durable_name
from ticketing_common.mongo import Document, connect, database
from ticketing_common.service import Service
from ticketing_common.sessions import issue_token
from ticketing_common.settings import ServiceSettings

T = TypeVar("T")
TEST_JWT_KEY = "test-jwt-key-that-is-long-enough-for-hs256"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class MongoCommands(monitoring.CommandListener):
    """The database commands a piece of test code causes, counted by their name: PyMongo calls
    listeners in the task that runs the command, so `counting()` sees only the commands of
    its own task (and of tasks it starts), not those of sweeps and listeners running beside."""

    def __init__(self) -> None:
        self._seen: ContextVar[list[str] | None] = ContextVar("mongo_commands", default=None)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        seen = self._seen.get()
        if seen is not None:
            seen.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    @contextmanager
    def counting(self) -> Iterator[list[str]]:
        seen: list[str] = []
        token = self._seen.set(seen)
        try:
            yield seen
        finally:
            self._seen.reset(token)


# Registered before any client exists: every client made in the run reports to it.
MONGO_COMMANDS = MongoCommands()


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (`timeout`, a cancelled CI job) ends the run like Ctrl-C, so fixture teardown
    stops the servers and stacks it started instead of leaving them running; the command
    listener is registered before any client is made."""
    monitoring.register(MONGO_COMMANDS)
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


@dataclass(frozen=True)
class Infra:
    mongo_uri: str
    nats_url: str
    redis_url: str


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """MongoDB, NATS and Redis for the whole session: embedded unless TEST_* names one."""
    root: Path = tmp_path_factory.mktemp("servers")
    with ExitStack() as stack:
        urls = {}
        for name, start in (("mongo", start_mongo), ("nats", start_nats), ("redis", start_redis)):
            given = os.environ.get(f"TEST_{name.upper()}_{'URI' if name == 'mongo' else 'URL'}")
            if given:
                urls[name] = given
                continue
            log = stack.enter_context((root / f"{name}.log").open("wb"))
            server = start(root / name, free_port(), log)
            stack.callback(server.stop)
            urls[name] = server.url
        yield Infra(urls["mongo"].rstrip("/"), urls["nats"], urls["redis"])


@pytest.fixture
def mongo_uri(infra: Infra) -> Iterator[str]:
    """A URI naming a fresh database, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(infra.mongo_uri)
    yield parts._replace(path=f"/{name}").geturl()
    client: MongoClient[dict[str, object]]
    with MongoClient(infra.mongo_uri, serverSelectionTimeoutMS=5000) as client:
        client.drop_database(name)


@pytest.fixture
async def nats_url(infra: Infra) -> str:
    """The NATS URL, with the event streams (and so every durable consumer) deleted first."""
    nc = await nats.connect(infra.nats_url)
    js = nc.jetstream()
    for stream in ("TICKETING", DEAD_LETTER_STREAM):
        with suppress(StreamNotFoundError):
            await js.delete_stream(stream)
    await nc.close()
    return infra.nats_url


@pytest.fixture
def redis_url(infra: Infra) -> str:
    """The Redis URL, emptied first."""
    parts = urlsplit(infra.redis_url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 5) as s:
        s.sendall(b"FLUSHALL\r\n")
        assert s.recv(64).startswith(b"+OK")
    return infra.redis_url


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run an app's lifespan in-process and give an HTTP client for it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
            yield client


async def eventually(check: Callable[[], Awaitable[T]], *, within: float = 60.0) -> T:
    """Poll `check` until it returns a truthy value (events cross the bus asynchronously). The
    bound only ends a failing test: it is generous, as a loaded machine is slow."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within}s; last value: {result!r}")
        await asyncio.sleep(0.05)


def service_settings(mongo_uri: str, nats_url: str, **overrides: object) -> dict[str, object]:
    """Settings of a service under test: quick retries, so failures show in seconds."""
    return {
        "mongo_uri": mongo_uri,
        "nats_url": nats_url,
        "jwt_key": TEST_JWT_KEY,
        "cookie_secure": False,
        "listener_backoff_seconds": 0.05,
        "listener_ack_wait_seconds": 1,
        "listener_max_deliver": 5,
        "outbox_sweep_seconds": 0.2,
        **overrides,
    }


def bearer(user_id: str | None = None) -> dict[str, str]:
    """Headers of a signed-in user (the original's `global.signin()`), a new user by default."""
    uid = user_id or str(ObjectId())
    token = issue_token(uid, f"{uid}@test.com", TEST_JWT_KEY, 3600)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def mongo_commands() -> MongoCommands:
    """`with mongo_commands.counting() as seen:` the database round trips of what runs inside."""
    return MONGO_COMMANDS


@contextmanager
def traced_in_memory(
    sampler: Sampler | None = None,
) -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """Tracing on within the block (sampled by `sampler`, the SDK's default if None), its
    finished spans kept in memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler, id_generator=tracing_sdk.RootIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield provider, exporter
    finally:
        tracing.use(None)
        provider.shutdown()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, its finished spans kept in memory (`spans.get_finished_spans()`)."""
    with traced_in_memory() as (_, exporter):
        yield exporter


@pytest.fixture
async def db(mongo_uri: str) -> AsyncIterator[AsyncDatabase[Document]]:
    """The test's database, for arranging and checking state directly."""
    mongo = connect(mongo_uri)
    yield database(mongo)
    await mongo.close()


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[EventBus]:
    """The real bus, as another service sees it."""
    events = await EventBus.connect(nats_url, name="tests", stream="TICKETING")
    yield events
    await events.close()


Publish = Callable[[Event], Awaitable[int]]


@pytest.fixture
def publish(bus: EventBus) -> Publish:
    """Publish an event as its owning service would (a fresh message id); returns its seq."""

    async def send(event: Event) -> int:
        data = json.dumps(event.payload()).encode()
        ack = await bus.publish(str(event.subject), data, str(ObjectId()))
        return ack.seq

    return send


async def stream_messages(bus: EventBus, subject: str | None = None) -> list[dict[str, Any]]:
    """Every message on the stream (under `subject`, if given), oldest first:
    `{seq, subject, msgId, data}`."""
    state = (await bus.js.stream_info(bus.stream)).state
    found: list[dict[str, Any]] = []
    for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
        try:
            msg = await bus.js.get_msg(bus.stream, seq)
        except StreamNotFoundError:
            continue
        if subject in (None, msg.subject) and msg.data is not None:
            msg_id = (msg.headers or {}).get("Nats-Msg-Id")
            message = {"seq": seq, "subject": msg.subject, "msgId": msg_id}
            found.append({**message, "data": json.loads(msg.data)})
    return found


async def consumer_caught_up(bus: EventBus, durable: str, seq: int) -> bool:
    """Whether the durable consumer has acked everything up to stream `seq`."""
    try:
        info = await bus.js.consumer_info(bus.stream, durable)
    except StreamNotFoundError:
        return False
    floor = info.ack_floor
    return floor is not None and floor.stream_seq >= seq and not info.num_ack_pending


def spawn_service(module: str, port: int, **env: str) -> subprocess.Popen[bytes]:
    """A service as its own process (`python -m <module>`), for tests that SIGKILL it."""
    environment = {
        **os.environ,
        "JWT_KEY": TEST_JWT_KEY,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "OUTBOX_SWEEP_SECONDS": "0.2",
        "LISTENER_ACK_WAIT_SECONDS": "1",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", module],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# --- one service under test: each service's conftest provides `service` (its declaration) ----


@pytest.fixture
def settings(service: Service[Any, Any], request: pytest.FixtureRequest) -> ServiceSettings:
    """The service's settings under test: its own database, the test bus and Redis, quick
    retries. A conftest overrides this fixture to add what its service needs (Stripe, say)."""
    values: dict[str, object] = {"jwt_key": TEST_JWT_KEY, "cookie_secure": False}
    fields = service.settings.model_fields
    if service.uses_mongo:
        values["mongo_uri"] = request.getfixturevalue("mongo_uri")
    if service.uses_nats:
        values.update(
            nats_url=request.getfixturevalue("nats_url"),
            listener_backoff_seconds=0.05,
            listener_ack_wait_seconds=1,
            listener_max_deliver=5,
            outbox_sweep_seconds=0.2,
        )
    if "redis_url" in fields:
        values["redis_url"] = request.getfixturevalue("redis_url")
    made: ServiceSettings = service.settings(**{k: v for k, v in values.items() if k in fields})
    return made


Start = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def start(service: Service[Any, Any], settings: ServiceSettings) -> Start:
    """Start the service in-process, with settings changed by keyword: `async with
    start(listener_max_deliver=2) as client`."""

    def starter(**overrides: object) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return serve(service.build(settings.model_copy(update=overrides)))

    return starter


@pytest.fixture
async def client(start: Start) -> AsyncIterator[httpx.AsyncClient]:
    """The running service (its listeners and timers too), over HTTP."""
    async with start() as http:
        yield http


@pytest.fixture
def signin() -> Callable[..., dict[str, str]]:
    """Headers of a signed-in user: `signin()` a new one, `signin(user_id)` that one."""
    return bearer


Published = Callable[[str], Awaitable[list[dict[str, Any]]]]


@pytest.fixture
def published(bus: EventBus) -> Published:
    """The payloads on the stream under one subject, oldest first."""

    async def read(subject: str) -> list[dict[str, Any]]:
        return [message["data"] for message in await stream_messages(bus, subject)]

    return read


Acked = Callable[[str, int], Awaitable[bool]]


@pytest.fixture
def acked(bus: EventBus, service: Service[Any, Any]) -> Acked:
    """Whether the service has applied and acked everything on `subject` up to stream `seq`."""

    async def check(subject: str, seq: int) -> bool:
        return await consumer_caught_up(bus, durable_name(service.name, subject), seq)

    return check


async def answers_ready(url: str) -> bool:
    """Whether the service at `url` says it is ready."""
    async with httpx.AsyncClient() as http:
        try:
            return (await http.get(f"{url}/readyz")).status_code == 200
        except httpx.TransportError:
            return False


async def until_ready(url: str, process: subprocess.Popen[bytes], *, within: float = 180) -> None:
    """Wait until a spawned service answers /readyz: a Python service starting on a loaded
    machine may take a minute, but one that exited fails the test at once."""

    async def ready() -> bool:
        assert process.poll() is None, f"the service at {url} exited with {process.returncode}"
        return await answers_ready(url)

    await eventually(ready, within=within)


# The families every service serves (names as the text format gives them: no `_total`); each
# fills where its work is done.
METRIC_FAMILIES = (
    "ticketing_http_requests",
    "ticketing_http_request_duration_seconds",
    "ticketing_events_published",
    "ticketing_events_applied",
    "ticketing_events_redelivered",
    "ticketing_events_dead_lettered",
    "ticketing_outbox_pending",
    "ticketing_outbox_oldest_pending_age_seconds",
    "ticketing_consumer_pending",
    "ticketing_consumer_ack_pending",
    "ticketing_argon2_hash_seconds",
    "ticketing_payments",
    "ticketing_expiration_lateness_seconds",
)


@dataclass(frozen=True)
class Scrape:
    """One scrape of a service's /metrics, as Prometheus reads it: family names and samples."""

    families: frozenset[str]
    samples: tuple[Sample, ...]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples `name` whose labels include `labels` (0 when there is none)."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def labels(self, name: str, label: str) -> set[str]:
        """The values of `label` among the samples `name`."""
        return {s.labels[label] for s in self.samples if s.name == name and label in s.labels}


async def scrape(http: httpx.AsyncClient) -> Scrape:
    """GET /metrics of the service `http` talks to, parsed (it must answer 200, text format)."""
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(response.text))
    samples = tuple(sample for family in families for sample in family.samples)
    return Scrape(frozenset(family.name for family in families), samples)

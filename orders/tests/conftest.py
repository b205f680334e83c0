"""Fixtures for the orders service: the app on real MongoDB and NATS, the bus, the replica."""

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from bson import ObjectId
from nats.js.errors import NotFoundError as JsNotFoundError
from pymongo.asynchronous.database import AsyncDatabase

from ticketing_common.bus import EventBus
from ticketing_common.events import Event
from ticketing_common.mongo import Document, connect, database
from ticketing_common.sessions import issue_token
from ticketing_common.testing import TEST_JWT_KEY, serve
from ticketing_orders.main import build
from ticketing_orders.settings import Settings


def make_settings(mongo_uri: str, nats_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
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
    return Settings(**values)  # type: ignore[arg-type]


Start = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def start(mongo_uri: str, nats_url: str) -> Start:
    """`async with start(**setting_overrides) as http:` runs the orders service in-process."""

    def starter(**overrides: object) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return serve(build(make_settings(mongo_uri, nats_url, **overrides)))

    return starter


@pytest.fixture
async def client(start: Start) -> AsyncIterator[httpx.AsyncClient]:
    async with start() as http:
        yield http


@pytest.fixture
async def db(mongo_uri: str) -> AsyncIterator[AsyncDatabase[Document]]:
    """The service's database, for arranging and checking state as the original tests did."""
    mongo = connect(mongo_uri)
    yield database(mongo)
    await mongo.close()


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[EventBus]:
    """The real bus, as another service sees it."""
    events = await EventBus.connect(nats_url, name="orders-tests", stream="TICKETING")
    yield events
    await events.close()


def signin(user_id: str | None = None) -> dict[str, str]:
    """Headers of a signed-in user (the original's `global.signin()`), a new user by default."""
    uid = user_id or str(ObjectId())
    token = issue_token(uid, f"{uid}@test.com", TEST_JWT_KEY, 3600)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth() -> Callable[[str | None], dict[str, str]]:
    return signin


NewTicket = Callable[..., Awaitable[Document]]


@pytest.fixture
def new_ticket(db: AsyncDatabase[Document]) -> NewTicket:
    """Put a ticket straight into the replica (the original's `Ticket.build(...).save()`)."""

    async def make(title: str = "concert", price: float = 20, version: int = 0) -> Document:
        doc: Document = {"_id": ObjectId(), "title": title, "price": price, "version": version}
        await db["tickets"].insert_one(doc)
        return doc

    return make


Publish = Callable[[Event], Awaitable[int]]


@pytest.fixture
def publish(bus: EventBus) -> Publish:
    """Publish an event as its owning service would; returns its stream sequence."""

    async def send(event: Event) -> int:
        data = json.dumps(event.payload()).encode()
        ack = await bus.publish(str(event.subject), data, str(ObjectId()))
        return ack.seq

    return send


Events = Callable[[str], Awaitable[list[dict[str, Any]]]]


@pytest.fixture
def events(bus: EventBus) -> Events:
    """Every payload on the stream under `subject`, in order (read straight from the stream)."""

    async def read(subject: str) -> list[dict[str, Any]]:
        state = (await bus.js.stream_info(bus.stream)).state
        found: list[dict[str, Any]] = []
        for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
            try:
                msg = await bus.js.get_msg(bus.stream, seq)
            except JsNotFoundError:
                continue
            if msg.subject == subject and msg.data is not None:
                found.append(json.loads(msg.data))
        return found

    return read


Consumed = Callable[[str, int], Awaitable[bool]]


@pytest.fixture
def consumed(bus: EventBus) -> Consumed:
    """Whether the service's consumer for `subject` has acked everything up to `seq`."""

    async def check(subject: str, seq: int) -> bool:
        durable = f"orders-{subject.replace('.', '-')}"
        try:
            info = await bus.js.consumer_info(bus.stream, durable)
        except JsNotFoundError:
            return False
        return info.ack_floor is not None and info.ack_floor.stream_seq >= seq

    return check

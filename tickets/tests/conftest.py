"""Fixtures for the tickets service: the app on real MongoDB and NATS, the bus as others see it."""

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from bson import ObjectId
from nats.js.errors import NotFoundError as JsNotFoundError
from pymongo.asynchronous.database import AsyncDatabase

from ticketing_common.bus import EventBus
from ticketing_common.events import (
    Event,
    OrderCancelled,
    OrderCreated,
    OrderStatus,
    PricedTicketRef,
    TicketRef,
)
from ticketing_common.mongo import Document, connect, database
from ticketing_common.sessions import issue_token
from ticketing_common.testing import TEST_JWT_KEY, serve
from ticketing_tickets.main import build
from ticketing_tickets.settings import Settings

TICKETS = "/api/tickets"


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
    """`async with start(**setting_overrides) as http:` runs the tickets service in-process."""

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
    events = await EventBus.connect(nats_url, name="tickets-tests", stream="TICKETING")
    yield events
    await events.close()


def _signin(user_id: str | None = None) -> dict[str, str]:
    uid = user_id or str(ObjectId())
    token = issue_token(uid, f"{uid}@test.com", TEST_JWT_KEY, 3600)
    return {"Authorization": f"Bearer {token}"}


Signin = Callable[..., dict[str, str]]


@pytest.fixture
def signin() -> Signin:
    """Headers of a signed-in user (the original's `global.signin()`), a new user by default."""
    return _signin


NewTicket = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def new_ticket(client: httpx.AsyncClient) -> NewTicket:
    """Sell a ticket through the API; returns the created ticket."""

    async def make(
        title: str = "concert", price: float = 20, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        response = await client.post(
            TICKETS, json={"title": title, "price": price}, headers=headers or _signin()
        )
        assert response.status_code == 201, response.text
        ticket: dict[str, Any] = response.json()
        return ticket

    return make


Publish = Callable[[Event], Awaitable[int]]


@pytest.fixture
def publish(bus: EventBus) -> Publish:
    """Publish an event as its owning service would (a fresh message id); returns its seq."""

    async def send(event: Event) -> int:
        data = json.dumps(event.payload()).encode()
        ack = await bus.publish(str(event.subject), data, str(ObjectId()))
        return ack.seq

    return send


Stored = Callable[[str], Awaitable[list[dict[str, Any]]]]


@pytest.fixture
def stored(bus: EventBus) -> Stored:
    """Every message on the stream under `subject`, in order: `{seq, msgId, data}`."""

    async def read(subject: str) -> list[dict[str, Any]]:
        info = await bus.js.stream_info(bus.stream)
        found: list[dict[str, Any]] = []
        if not info.state.messages:
            return found
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await bus.js.get_msg(bus.stream, seq)
            except JsNotFoundError:
                continue
            if msg.subject == subject and msg.data is not None:
                msg_id = (msg.headers or {}).get("Nats-Msg-Id")
                found.append({"seq": seq, "msgId": msg_id, "data": json.loads(msg.data)})
        return found

    return read


Acked = Callable[[str, int], Awaitable[bool]]


@pytest.fixture
def acked(bus: EventBus) -> Acked:
    """Whether the service's consumer of `subject` has acked everything up to stream `seq`."""

    async def check(subject: str, seq: int) -> bool:
        durable = f"tickets-{subject.replace('.', '-')}"
        try:
            info = await bus.js.consumer_info(bus.stream, durable)
        except JsNotFoundError:
            return False
        return (
            info.ack_floor is not None
            and info.ack_floor.stream_seq >= seq
            and info.num_ack_pending == 0
        )

    return check


def _order_created(ticket: dict[str, Any], order_id: str | None = None) -> OrderCreated:
    return OrderCreated(
        id=order_id or str(ObjectId()),
        version=0,
        status=OrderStatus.CREATED,
        userId=str(ObjectId()),
        expiresAt=datetime.now(UTC) + timedelta(minutes=15),
        ticket=PricedTicketRef(id=ticket["id"], price=ticket["price"]),
    )


def _order_cancelled(ticket: dict[str, Any], order_id: str) -> OrderCancelled:
    return OrderCancelled(id=order_id, version=1, ticket=TicketRef(id=ticket["id"]))


@pytest.fixture
def order_created() -> Callable[..., OrderCreated]:
    """`order_created(ticket, order_id=None)`: the event the orders service emits."""
    return _order_created


@pytest.fixture
def order_cancelled() -> Callable[..., OrderCancelled]:
    """`order_cancelled(ticket, order_id)`: the event the orders service emits."""
    return _order_cancelled

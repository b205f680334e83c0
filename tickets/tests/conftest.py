"""Fixtures for the tickets service: the app on real MongoDB and NATS, the bus as others see it."""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from bson import ObjectId

from ticketing_common.bus import EventBus
from ticketing_common.events import (
    OrderCancelled,
    OrderCreated,
    OrderStatus,
    PricedTicketRef,
    TicketRef,
)
from ticketing_testing import (
    bearer,
    consumer_caught_up,
    serve,
    service_settings,
    stream_messages,
)
from ticketing_tickets.service import SERVICE
from ticketing_tickets.settings import Settings

TICKETS = "/api/tickets"


def make_settings(mongo_uri: str, nats_url: str, **overrides: object) -> Settings:
    return Settings(**service_settings(mongo_uri, nats_url, **overrides))  # type: ignore[arg-type]


Start = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def start(mongo_uri: str, nats_url: str) -> Start:
    """`async with start(**setting_overrides) as http:` runs the tickets service in-process."""

    def starter(**overrides: object) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return serve(SERVICE.build(make_settings(mongo_uri, nats_url, **overrides)))

    return starter


@pytest.fixture
async def client(start: Start) -> AsyncIterator[httpx.AsyncClient]:
    async with start() as http:
        yield http


Signin = Callable[..., dict[str, str]]


@pytest.fixture
def signin() -> Signin:
    """Headers of a signed-in user (the original's `global.signin()`), a new user by default."""
    return bearer


NewTicket = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def new_ticket(client: httpx.AsyncClient) -> NewTicket:
    """Sell a ticket through the API; returns the created ticket."""

    async def make(
        title: str = "concert", price: float = 20, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        response = await client.post(
            TICKETS, json={"title": title, "price": price}, headers=headers or bearer()
        )
        assert response.status_code == 201, response.text
        ticket: dict[str, Any] = response.json()
        return ticket

    return make


Stored = Callable[[str], Awaitable[list[dict[str, Any]]]]


@pytest.fixture
def stored(bus: EventBus) -> Stored:
    """Every message on the stream under `subject`, in order: `{seq, msgId, data}`."""

    async def read(subject: str) -> list[dict[str, Any]]:
        return await stream_messages(bus, subject)

    return read


Acked = Callable[[str, int], Awaitable[bool]]


@pytest.fixture
def acked(bus: EventBus) -> Acked:
    """Whether the tickets consumer of `subject` has acked everything up to stream `seq`."""

    async def check(subject: str, seq: int) -> bool:
        return await consumer_caught_up(bus, f"tickets-{subject.replace('.', '-')}", seq)

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

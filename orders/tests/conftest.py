"""Fixtures for the orders service: the app on real MongoDB and NATS, and its ticket replica."""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from ticketing_common.bus import EventBus
from ticketing_common.mongo import Document
from ticketing_orders.service import SERVICE
from ticketing_orders.settings import Settings
from ticketing_testing import (
    bearer,
    consumer_caught_up,
    serve,
    service_settings,
    stream_messages,
)


def make_settings(mongo_uri: str, nats_url: str, **overrides: object) -> Settings:
    return Settings(**service_settings(mongo_uri, nats_url, **overrides))  # type: ignore[arg-type]


Start = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def start(mongo_uri: str, nats_url: str) -> Start:
    """`async with start(**setting_overrides) as http:` runs the orders service in-process."""

    def starter(**overrides: object) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return serve(SERVICE.build(make_settings(mongo_uri, nats_url, **overrides)))

    return starter


@pytest.fixture
async def client(start: Start) -> AsyncIterator[httpx.AsyncClient]:
    async with start() as http:
        yield http


@pytest.fixture
def auth() -> Callable[[str | None], dict[str, str]]:
    return bearer


NewTicket = Callable[..., Awaitable[Document]]


@pytest.fixture
def new_ticket(db: AsyncDatabase[Document]) -> NewTicket:
    """Put a ticket straight into the replica (the original's `Ticket.build(...).save()`)."""

    async def make(title: str = "concert", price: float = 20, version: int = 0) -> Document:
        doc: Document = {"_id": ObjectId(), "title": title, "price": price, "version": version}
        await db["tickets"].insert_one(doc)
        return doc

    return make


Events = Callable[[str], Awaitable[list[dict[str, Any]]]]


@pytest.fixture
def events(bus: EventBus) -> Events:
    """Every payload on the stream under `subject`, in order (read straight from the stream)."""

    async def read(subject: str) -> list[dict[str, Any]]:
        return [message["data"] for message in await stream_messages(bus, subject)]

    return read


Consumed = Callable[[str, int], Awaitable[bool]]


@pytest.fixture
def consumed(bus: EventBus) -> Consumed:
    """Whether the orders consumer of `subject` has acked everything up to `seq`."""

    async def check(subject: str, seq: int) -> bool:
        return await consumer_caught_up(bus, f"orders-{subject.replace('.', '-')}", seq)

    return check


@pytest.fixture
async def order(
    client: httpx.AsyncClient, auth: Callable[[str | None], dict[str, str]], new_ticket: NewTicket
) -> dict[str, Any]:
    """An order placed through the API, with the headers of the user who placed it."""
    ticket = await new_ticket()
    user = auth(None)
    response = await client.post("/api/orders", json={"ticketId": str(ticket["_id"])}, headers=user)
    return {**response.json(), "headers": user}


async def stored_order(db: AsyncDatabase[Document], order: dict[str, Any]) -> Document:
    """The order as stored, less the outbox the relay empties in the background."""
    doc = await db["orders"].find_one({"_id": ObjectId(order["id"])})
    assert doc is not None
    return {k: v for k, v in doc.items() if k not in ("outbox", "outboxRev", "outboxAt")}

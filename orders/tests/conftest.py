"""Fixtures for the orders service: the service under test (the shared harness runs it on real
MongoDB and NATS), its ticket replica, and an order placed through the API."""

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from ticketing_common.mongo import Document
from ticketing_common.service import Service
from ticketing_orders.service import SERVICE

from .support import NewTicket


@pytest.fixture
def service() -> Service[Any, Any]:
    return SERVICE


@pytest.fixture
def new_ticket(db: AsyncDatabase[Document]) -> NewTicket:
    """Put a ticket straight into the replica (the original's `Ticket.build(...).save()`)."""

    async def make(title: str = "concert", price: float = 20, version: int = 0) -> Document:
        doc: Document = {"_id": ObjectId(), "title": title, "price": price, "version": version}
        await db["tickets"].insert_one(doc)
        return doc

    return make


@pytest.fixture
async def order(
    client: httpx.AsyncClient, signin: Callable[..., dict[str, str]], new_ticket: NewTicket
) -> dict[str, Any]:
    """An order placed through the API, with the headers of the user who placed it."""
    ticket = await new_ticket()
    user = signin()
    response = await client.post("/api/orders", json={"ticketId": str(ticket["_id"])}, headers=user)
    return {**response.json(), "headers": user}

"""Fixtures for the tickets service: the common harness (`ticketing_testing`) runs the service
this declares; these add what the tickets tests arrange (tickets for sale, orders' events)."""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from bson import ObjectId

from ticketing_common.events import (
    OrderCancelled,
    OrderCreated,
    OrderStatus,
    PricedTicketRef,
    TicketRef,
)
from ticketing_common.service import Service
from ticketing_testing import bearer
from ticketing_tickets.service import SERVICE

TICKETS = "/api/tickets"


@pytest.fixture
def service() -> Service[Any, Any]:
    """The service under test, for the harness's `settings`, `start`, `client`, `acked`."""
    return SERVICE


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

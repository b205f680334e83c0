"""`/api/tickets`: sell a ticket, list the available ones, show one, edit one's title and price."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status

from ticketing_common.errors import NotFoundError
from ticketing_common.mongo import require_object_id
from ticketing_common.service import context_of
from ticketing_common.sessions import RequiredUser
from ticketing_tickets.models import (
    Limit,
    NewTicket,
    Offset,
    TicketEdit,
    Tickets,
    edit,
    to_api,
)

router = APIRouter(tags=["tickets"])


async def get_tickets(request: Request) -> Tickets:
    return context_of(request, Tickets)


TicketsDep = Annotated[Tickets, Depends(get_tickets)]


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_ticket(user: RequiredUser, body: NewTicket, tickets: TicketsDep) -> dict[str, Any]:
    doc = await tickets.create(body.title, body.price, user.id)
    return to_api(doc)


@router.get("")
async def list_tickets(
    tickets: TicketsDep,
    limit: Annotated[Limit, Query()] = 100,
    offset: Annotated[Offset, Query()] = 0,
) -> list[dict[str, Any]]:
    return [to_api(doc) for doc in await tickets.available(limit, offset)]


@router.get("/{ticket_id}")
async def show_ticket(ticket_id: str, tickets: TicketsDep) -> dict[str, Any]:
    doc = await tickets.get(require_object_id(ticket_id))
    if doc is None:
        raise NotFoundError()
    return to_api(doc)


@router.put("/{ticket_id}")
async def update_ticket(
    ticket_id: str,
    user: RequiredUser,
    body: TicketEdit,
    tickets: TicketsDep,
) -> dict[str, Any]:
    # 401 and 400 (validation) are the dependencies above; the rest is `edit`, in SPEC order.
    oid = require_object_id(ticket_id)
    doc, _ = await tickets.change(oid, lambda d: edit(d, user.id, body.title, body.price))
    assert doc is not None
    return to_api(doc)

"""`/api/tickets`: sell a ticket, list the available ones, show one, edit one's title and price.

Every route answers `TicketOut` without its None fields: `orderId` is absent while a ticket is
free (SPEC §3), never null."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from ticketing_common.errors import NotFoundError
from ticketing_common.mongo import require_object_id
from ticketing_common.service import context
from ticketing_common.sessions import RequiredUser
from ticketing_tickets.domain import edit
from ticketing_tickets.repository import Tickets
from ticketing_tickets.schemas import Limit, NewTicket, Offset, TicketEdit, TicketOut

router = APIRouter(tags=["tickets"])


TicketsDep = Annotated[Tickets, Depends(context(Tickets))]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TicketOut,
    response_model_exclude_none=True,
)
async def create_ticket(user: RequiredUser, body: NewTicket, tickets: TicketsDep) -> TicketOut:
    return TicketOut.of(await tickets.create(body.title, body.price, user.id))


@router.get("", response_model=list[TicketOut], response_model_exclude_none=True)
async def list_tickets(
    tickets: TicketsDep,
    limit: Annotated[Limit, Query()] = 100,
    offset: Annotated[Offset, Query()] = 0,
) -> list[TicketOut]:
    return [TicketOut.of(ticket) for ticket in await tickets.available(limit, offset)]


@router.get("/{ticket_id}", response_model=TicketOut, response_model_exclude_none=True)
async def show_ticket(ticket_id: str, tickets: TicketsDep) -> TicketOut:
    ticket = await tickets.get(require_object_id(ticket_id))
    if ticket is None:
        raise NotFoundError()
    return TicketOut.of(ticket)


@router.put("/{ticket_id}", response_model=TicketOut, response_model_exclude_none=True)
async def update_ticket(
    ticket_id: str,
    user: RequiredUser,
    body: TicketEdit,
    tickets: TicketsDep,
) -> TicketOut:
    # 401 and 400 (validation) are the dependencies above; the rest is `edit`, in SPEC order.
    oid = require_object_id(ticket_id)
    ticket, _ = await tickets.change(oid, lambda t: edit(t, user.id, body.title, body.price))
    assert ticket is not None
    return TicketOut.of(ticket)

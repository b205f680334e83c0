"""`/api/tickets`: sell a ticket, list the available ones, show one, edit one's title and price.

Every route answers `TicketOut` without its None fields: `orderId` is absent while a ticket is
free (SPEC §3), never null."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response, status

from ticketing_common.errors import NotFoundError
from ticketing_common.mongo import require_object_id
from ticketing_common.service import context
from ticketing_common.sessions import RequiredUser
from ticketing_tickets.domain import edit
from ticketing_tickets.repository import Tickets
from ticketing_tickets.schemas import (
    After,
    Limit,
    NewTicket,
    Offset,
    TicketEdit,
    TicketOut,
    next_cursor,
)

router = APIRouter(tags=["tickets"])


TicketsDep = Annotated[Tickets, Depends(context(Tickets))]


@router.post("", status_code=status.HTTP_201_CREATED, response_model_exclude_none=True)
async def create_ticket(user: RequiredUser, body: NewTicket, tickets: TicketsDep) -> TicketOut:
    return TicketOut.of(await tickets.create(body.title, body.price, user.id))


def _next_link(request: Request, limit: int, listing: str) -> str:
    """The next page, as a reference relative to this one: the cursor replaces any offset."""
    query = urlencode({"limit": limit, "after": next_cursor(listing)})
    return f'<{request.url.path}?{query}>; rel="next"'


@router.get(
    "",
    response_model_exclude_none=True,
    description=(
        "Open tickets, newest (most recently created) first. When more follow, the answer has "
        'a `Link: </api/tickets?limit=..&after=..>; rel="next"` header; `after` is an opaque '
        "cursor. Pages read with it never repeat a ticket nor miss one that stays open while "
        "others are sold, reserved or released; one sold, or released, newer than the cursor "
        "meanwhile shows from the first page."
    ),
)
async def list_tickets(
    request: Request,
    response: Response,
    tickets: TicketsDep,
    limit: Annotated[Limit, Query()] = 100,
    offset: Annotated[Offset, Query()] = 0,
    after: Annotated[After, Query(description="the cursor of a `rel=next` link")] = None,
) -> list[TicketOut]:
    page, last = await tickets.available(limit, offset, after)
    if last is not None:
        response.headers["Link"] = _next_link(request, limit, last)
    return [TicketOut.of(ticket) for ticket in page]


@router.get("/{ticket_id}", response_model_exclude_none=True)
async def show_ticket(ticket_id: str, tickets: TicketsDep) -> TicketOut:
    ticket = await tickets.get(require_object_id(ticket_id))
    if ticket is None:
        raise NotFoundError()
    return TicketOut.of(ticket)


@router.put("/{ticket_id}", response_model_exclude_none=True)
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

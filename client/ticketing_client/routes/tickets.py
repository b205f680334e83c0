"""`/` (tickets on sale), `/tickets/new` (sell one), `/tickets/{id}` (view and purchase)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response

from ticketing_client.api import Problem, Reply, UpstreamError
from ticketing_client.error_pages import HtmlRoute
from ticketing_client.forms import FormDep, field, object_id
from ticketing_client.order_status import HOLDING
from ticketing_client.views import page, redirect
from ticketing_client.visitor import Visitor, VisitorDep

router = APIRouter(route_class=HtmlRoute, include_in_schema=False)


@router.get("/")
async def index(visitor: VisitorDep, after: str | None = None) -> Response:
    """Open tickets, newest first, a page at a time: `after` is the API's cursor."""
    reply = await visitor.api.tickets(after)
    if reply.status == 400 and "after" in reply.fields:
        raise UpstreamError(400, "There is no such page of tickets")  # a mangled link
    reply.require()
    return page(
        visitor, "index.html", tickets=reply.items(), first_page=after is None, after=reply.after
    )


def _new_form(visitor: Visitor, *, status: int = 200, **context: Any) -> Response:
    values = {"title": "", "price": "", "problems": [], "fields": set(), **context}
    return page(visitor, "ticket_new.html", status=status, **values)


@router.get("/tickets/new")
async def new_ticket_page(visitor: VisitorDep) -> Response:
    if visitor.user is None:
        return redirect(visitor, "/auth/signin")
    return _new_form(visitor)


@router.post("/tickets/new")
async def create_ticket(visitor: VisitorDep, form: FormDep) -> Response:
    if visitor.user is None:
        return redirect(visitor, "/auth/signin")
    title, price = field(form, "title"), field(form, "price").strip()
    reply = await visitor.api.create_ticket(visitor.session, title, price)
    if reply.status == 401:
        return redirect(visitor, "/auth/signin")
    if reply.ok:
        return redirect(visitor, "/")
    return _new_form(
        visitor,
        status=reply.status,
        title=title,
        price=price,
        problems=reply.problems,
        fields=reply.fields,
    )


async def _ticket_page(
    visitor: Visitor, ticket_id: str, *, status: int = 200, problems: tuple[Problem, ...] = ()
) -> Response:
    """The ticket, and (signed in) the visitor's own orders, fetched at the same time."""
    if visitor.user is not None:
        ticket_reply, orders_reply = await asyncio.gather(
            visitor.api.ticket(ticket_id), visitor.api.orders(visitor.session)
        )
    else:
        ticket_reply, orders_reply = await visitor.api.ticket(ticket_id), Reply(200, [])
    ticket = ticket_reply.require().json()
    mine = next(
        (
            o
            for o in orders_reply.items()
            if o.get("status") in HOLDING and (o.get("ticket") or {}).get("id") == ticket_id
        ),
        None,
    )
    own = visitor.user is not None and ticket.get("userId") == visitor.user.id
    return page(
        visitor,
        "ticket_show.html",
        status=status,
        ticket=ticket,
        my_order=mine,
        own=own,
        reserved="orderId" in ticket,
        problems=list(problems),
    )


@router.get("/tickets/{ticket_id}")
async def show_ticket(ticket_id: str, visitor: VisitorDep) -> Response:
    return await _ticket_page(visitor, object_id(ticket_id))


@router.post("/tickets/{ticket_id}")
async def purchase(ticket_id: str, visitor: VisitorDep, form: FormDep) -> Response:
    ticket_id = object_id(ticket_id)
    if visitor.user is None:
        return redirect(visitor, "/auth/signin")
    reply = await visitor.api.create_order(visitor.session, ticket_id)
    if reply.status == 401:
        return redirect(visitor, "/auth/signin")
    if reply.ok and reply.json().get("id"):
        return redirect(visitor, f"/orders/{reply.json()['id']}")
    return await _ticket_page(
        visitor,
        ticket_id,
        status=reply.status if reply.status >= 400 else 502,
        problems=reply.problems,
    )

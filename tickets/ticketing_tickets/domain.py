"""Tickets: the ticket as stored, and the rules of editing, reserving and freeing it.

Every write to a ticket is conditional on the ticket's write revision `rev`, which every write
raises: a writer that lost a race re-reads the ticket and decides again, so a concurrent edit
and a reservation never overwrite each other. `version` is the revision the other services see:
it rises by exactly one with each visible change, together with the `ticket:updated` event that
carries it (one atomic write, through the outbox).

A ticket is listed (on sale, in `GET /api/tickets`) while no order holds it: `listing`, its key in
the open-ticket list, is present exactly then, set and removed in the same write as `orderId`, so
the list is one index range (a sparse index on `listing`) on nx-27017 and MongoDB alike. The key
is the ticket's id as hex: the list is in creation order, newest first, and a released ticket
goes back to its place.

A reservation's order id is kept in `releasedOrders` once that order is cancelled, so that a
late or redelivered `order:created` of a cancelled order cannot reserve the ticket again.

The decisions here take the ticket as read and return the update to write (with its events),
or None when there is nothing to do; they raise the SPEC's refusals. No I/O: the repository
writes what they decide, conditional on the `rev` they decided on.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

from bson import ObjectId

from ticketing_common.errors import BadRequestError, NotAuthorizedError, NotFoundError
from ticketing_common.mongo import Update
from ticketing_common.outbox import add_events
from ticketing_tickets.events.publishers import ticket_updated


class TicketDoc(TypedDict):
    """A ticket in the `tickets` collection."""

    _id: ObjectId
    title: str
    price: float
    userId: str
    version: int  # what the other services see: +1 with each `ticket:updated`
    rev: int  # the write revision: +1 with every write, the condition of the next one
    orderId: NotRequired[str]  # only while an order holds the ticket
    listing: NotRequired[str]  # only while no order holds it: its key in the open-ticket list
    releasedOrders: NotRequired[dict[str, bool]]  # the cancelled orders seen, by id
    # The outbox (`ticketing_common.outbox`): events stored with a change, until published.
    outbox: NotRequired[dict[str, dict[str, object]]]
    outboxRev: NotRequired[int]
    outboxAt: NotRequired[int]


def listing_key(ticket_id: ObjectId) -> str:
    """The ticket's key in the open-ticket list: its id's hex sorts as the id, by creation."""
    return str(ticket_id)


def new_ticket(title: str, price: float, user_id: str) -> TicketDoc:
    """A ticket put up for sale: version 0, free, listed."""
    ticket_id = ObjectId()
    return {
        "_id": ticket_id,
        "title": title,
        "price": price,
        "userId": user_id,
        "version": 0,
        "rev": 0,
        "listing": listing_key(ticket_id),
    }


def edit(ticket: TicketDoc | None, user_id: str, title: str, price: float) -> Update:
    """The owner's edit, checked in SPEC order after validation: 404, reserved, not the owner."""
    if ticket is None:
        raise NotFoundError()
    if ticket.get("orderId"):
        raise BadRequestError("Cannot edit a reserved ticket")
    if ticket["userId"] != user_id:
        raise NotAuthorizedError()
    return add_events(
        ticket,
        {"$set": {"title": title, "price": price}, "$inc": {"version": 1}},
        ticket_updated(ticket, title=title, price=price, order_id=None),
    )


def _released(ticket: TicketDoc, order_id: str) -> bool:
    return order_id in (ticket.get("releasedOrders") or {})


def reserve(ticket: TicketDoc, order_id: str) -> Update | None:
    """`order:created`: hold the ticket for the order; None when there is nothing to do."""
    if ticket.get("orderId") == order_id or _released(ticket, order_id):
        return None  # a repeat, or an order that was cancelled before this event arrived
    if ticket.get("orderId"):
        return None  # another order holds it: a replayed or late event never takes it over
    return add_events(
        ticket,
        {"$set": {"orderId": order_id}, "$unset": {"listing": ""}, "$inc": {"version": 1}},
        ticket_updated(ticket, order_id=order_id),
    )


def held_by_another(ticket: TicketDoc, order_id: str) -> str | None:
    """The live order that holds the ticket, if not `order_id` (nor an order seen cancelled).

    Orders lets one live order hold a ticket, so that order's cancellation is on its way: the
    new order's reservation waits for it rather than being dropped.
    """
    holder = ticket.get("orderId")
    if holder and holder != order_id and not _released(ticket, order_id):
        return holder
    return None


def release(ticket: TicketDoc, order_id: str) -> Update | None:
    """`order:cancelled`: free the ticket if this order holds it; remember the order either way."""
    released = f"releasedOrders.{order_id}"
    if ticket.get("orderId") == order_id:
        return add_events(
            ticket,
            {
                "$unset": {"orderId": ""},
                "$set": {released: True, "listing": listing_key(ticket["_id"])},
                "$inc": {"version": 1},
            },
            ticket_updated(ticket, order_id=None),
        )
    if _released(ticket, order_id):
        return None  # a repeat
    # Another order holds it, or this order's `order:created` has not arrived (yet): nothing
    # the other services can see changes, so neither `version` nor an event.
    return {"$set": {released: True}}

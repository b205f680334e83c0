"""Orders: the order and the ticket replica as stored, and the rules of the order's life.

An order holds its ticket in `activeTicketId` while it is created, awaiting payment or complete
(a unique index lets one such order hold a ticket); cancelling removes it, and so frees the
ticket. `openUntil` (epoch milliseconds of `expiresAt`) is present while the order may still be
paid: the overdue sweep reads only those.

The decisions here take the order as read and return the update to write (with the events it
stores, through the outbox), or None when there is nothing to do; they raise the SPEC's
refusals. No I/O: the repository writes what they decide, conditional on the `version` they
decided on, and decides again on the fresh order when another writer got there first.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NotRequired, TypedDict, cast

from bson import ObjectId

from ticketing_common.errors import BadRequestError, NotAuthorizedError, NotFoundError
from ticketing_common.events import OrderStatus
from ticketing_common.moments import epoch_ms
from ticketing_common.mongo import Update
from ticketing_common.outbox import add_events, with_events
from ticketing_orders.events.publishers import order_cancelled, order_created

# --- the documents --------------------------------------------------------------------------


class TicketDoc(TypedDict):
    """The orders service's copy of a ticket (the `tickets` collection), kept by its events."""

    _id: ObjectId
    title: str
    price: float
    version: int


class OrderDoc(TypedDict):
    """An order in the `orders` collection."""

    _id: ObjectId
    userId: str
    status: str  # an OrderStatus
    expiresAt: datetime
    version: int  # +1 with every change; the other services follow it by the events
    ticketId: ObjectId
    price: float  # the ticket's price when the order was placed: what the buyer pays
    createdAt: datetime
    activeTicketId: NotRequired[ObjectId]  # the ticket, while this order holds it
    openUntil: NotRequired[int]  # epoch ms of `expiresAt`, while the order may be paid
    refunded: NotRequired[bool]  # present (true) once a payment of it was given back
    # The outbox (`ticketing_common.outbox`): events stored with a change, until published.
    outbox: NotRequired[dict[str, dict[str, object]]]
    outboxRev: NotRequired[int]
    outboxAt: NotRequired[int]


class TicketAlreadyReserved(BadRequestError):
    """Another live order holds the ticket (the unique index said so)."""

    default_message = "Ticket is already reserved"


# Statuses in which an order may still be paid, or expire.
LIVE = (OrderStatus.CREATED, OrderStatus.AWAITING_PAYMENT)
# Paid: complete, and no longer open (the overdue sweep leaves it).
COMPLETION: Update = {"$set": {"status": str(OrderStatus.COMPLETE)}, "$unset": {"openUntil": ""}}
# A payment of the order was given back: the status (and the version) stay as they are.
REFUND: Update = {"$set": {"refunded": True}}


# --- placing an order -----------------------------------------------------------------------


def _to_millis(moment: datetime) -> datetime:
    """MongoDB keeps milliseconds: round here so the event says what the document holds."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def expiry(now: datetime, window_seconds: int) -> datetime:
    """When an order placed `now` expires unpaid, to the millisecond stored."""
    return _to_millis(now + timedelta(seconds=window_seconds))


def orderable(ticket: TicketDoc | None) -> TicketDoc:
    """The ticket an order is placed for: one the replica does not know is a 404."""
    if ticket is None:
        raise NotFoundError()
    return ticket


def new_order(user_id: str, ticket: TicketDoc, now: datetime, window_seconds: int) -> OrderDoc:
    """A `created` order holding `ticket` at its price, carrying its `order:created` event.

    Whether another order holds the ticket is for the database to say, on the insert."""
    expires_at = expiry(now, window_seconds)
    order: OrderDoc = {
        "_id": ObjectId(),
        "userId": user_id,
        "status": str(OrderStatus.CREATED),
        "expiresAt": expires_at,
        "version": 0,
        "ticketId": ticket["_id"],
        "activeTicketId": ticket["_id"],
        "price": ticket["price"],
        "openUntil": epoch_ms(expires_at),
        "createdAt": _to_millis(now),
    }
    return cast(OrderDoc, with_events(order, order_created(order)))


# --- the order's life -----------------------------------------------------------------------


def owned(order: OrderDoc | None, user_id: str) -> OrderDoc:
    """The caller's order: 404 when there is none, 401 when it is someone else's."""
    if order is None:
        raise NotFoundError()
    if order["userId"] != user_id:
        raise NotAuthorizedError()
    return order


def cancellation(order: OrderDoc) -> Update:
    """Cancel, release the ticket, and tell the others (the event names the new version)."""
    return add_events(
        order,
        {
            "$set": {"status": str(OrderStatus.CANCELLED)},
            "$unset": {"activeTicketId": "", "openUntil": ""},
        },
        order_cancelled(order),
    )


def cancel_by_user(order: OrderDoc | None, user_id: str) -> Update | None:
    """DELETE, in SPEC order: 404, 401 if another user's, 400 for a paid order (it stays paid);
    cancelling a cancelled order changes nothing and says nothing."""
    mine = owned(order, user_id)
    if mine["status"] == OrderStatus.COMPLETE:
        raise BadRequestError("Cannot cancel a completed order")
    return None if mine["status"] == OrderStatus.CANCELLED else cancellation(mine)


def expire(order: OrderDoc) -> Update | None:
    """`expiration:complete` (and the overdue sweep): only an unpaid, live order is cancelled."""
    return cancellation(order) if order["status"] in LIVE else None


def completing(order: OrderDoc) -> Update | None:
    """`payment:created`: a live order is paid (once). A cancelled order stays cancelled:
    payments refunds a charge that came too late, and the ticket may already be another's."""
    return COMPLETION if order["status"] in LIVE else None


def overdue_cutoff(now: datetime, grace_seconds: float) -> int:
    """Orders open until before this (epoch ms) are overdue: their expiry passed more than
    the grace ago, so their expiration job was lost."""
    return epoch_ms(now) - int(grace_seconds * 1000)


# --- what the API shows of an order ---------------------------------------------------------

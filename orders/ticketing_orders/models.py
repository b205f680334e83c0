"""Orders and the ticket replica: request bodies, the order life cycle, storage.

One order per ticket is decided by MongoDB, not by a look-up: an order holds its ticket in
`activeTicketId` while it is created, awaiting payment or complete, under a sparse unique
index, and cancelling `$unset`s it. (A partial index would say the same on MongoDB, but the
embedded server ignores partial filters; sparse indexes behave the same on both.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from bson import ObjectId
from pydantic import AfterValidator, BaseModel
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ticketing_common.errors import BadRequestError, NotAuthorizedError, NotFoundError
from ticketing_common.events import (
    OrderCancelled,
    OrderCreated,
    OrderStatus,
    PricedTicketRef,
    TicketCreated,
    TicketRef,
    TicketUpdated,
)
from ticketing_common.moments import epoch_ms, iso
from ticketing_common.mongo import Document, Index, object_id
from ticketing_common.outbox import Outbox, OutboxRelay, add_events, with_events
from ticketing_common.replica import Applied, apply_next, event_object_id, insert_first
from ticketing_common.runtime import Runtime
from ticketing_common.validation import required, rule

ORDERS = "orders"
TICKETS = "tickets"

INDEXES = {
    ORDERS: [
        # A user's orders, newest first. Not (userId, _id): the embedded server then fails every
        # insert with "JSON path error near '_id'".
        Index([("userId", 1), ("createdAt", -1)]),
        Index([("activeTicketId", 1)], unique=True, sparse=True),  # one live order per ticket
        # Present while an order may still be paid: the overdue sweep reads only those.
        Index([("openUntil", 1)], sparse=True),
    ],
    TICKETS: [],  # the replica is only ever read by _id
}

Update = dict[str, dict[str, Any]]
Step = Callable[[Document], Update | None]


# --- request bodies and answers -------------------------------------------------------------


def _ticket_id(value: str) -> str:
    if object_id(value) is None:
        raise ValueError("not an ObjectId")
    return value


class NewOrder(BaseModel):
    ticketId: Annotated[str, AfterValidator(_ticket_id), rule("TicketId must be provided")] = (
        required()
    )

    @property
    def ticket_oid(self) -> ObjectId:
        return ObjectId(self.ticketId)


class TicketOut(BaseModel):
    id: str
    title: str
    price: float
    version: int


class OrderOut(BaseModel):
    id: str
    userId: str
    status: OrderStatus
    expiresAt: str
    version: int
    # The ticket's price when the order was placed: what the buyer is shown and charged.
    price: float
    refunded: bool
    ticket: TicketOut | None  # None only if the replica lost the ticket, which it never deletes


def ticket_out(ticket: Mapping[str, Any]) -> TicketOut:
    return TicketOut(
        id=str(ticket["_id"]),
        title=ticket["title"],
        price=ticket["price"],
        version=ticket["version"],
    )


def order_out(order: Mapping[str, Any], ticket: Mapping[str, Any] | None) -> OrderOut:
    return OrderOut(
        id=str(order["_id"]),
        userId=order["userId"],
        status=OrderStatus(order["status"]),
        expiresAt=iso(order["expiresAt"]),
        version=order["version"],
        price=order["price"],
        refunded=bool(order.get("refunded")),
        ticket=ticket_out(ticket) if ticket is not None else None,
    )


# --- the order life cycle, free of I/O ------------------------------------------------------


def _to_millis(moment: datetime) -> datetime:
    """MongoDB keeps milliseconds: round here so the event says what the document holds."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def new_order(user_id: str, ticket: Mapping[str, Any], now: datetime, window: int) -> Document:
    """A `created` order holding `ticket`, carrying its `order:created` event."""
    oid = ObjectId()
    expires_at = _to_millis(now + timedelta(seconds=window))
    doc: Document = {
        "_id": oid,
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
    event = OrderCreated(
        id=str(oid),
        version=0,
        status=OrderStatus.CREATED,
        userId=user_id,
        expiresAt=expires_at,
        ticket=PricedTicketRef(id=str(ticket["_id"]), price=ticket["price"]),
    )
    return with_events(doc, event)


def cancellation(order: Mapping[str, Any]) -> Update:
    """Cancel, release the ticket, and tell the others (the event names the new version)."""
    event = OrderCancelled(
        id=str(order["_id"]),
        version=order["version"] + 1,
        ticket=TicketRef(id=str(order["ticketId"])),
    )
    return add_events(
        order,
        {
            "$set": {"status": str(OrderStatus.CANCELLED)},
            "$unset": {"activeTicketId": "", "openUntil": ""},
        },
        event,
    )


def cancel_by_user(order: Mapping[str, Any]) -> Update | None:
    """DELETE: a paid order stays paid; cancelling twice changes nothing and says nothing."""
    status = order["status"]
    if status == OrderStatus.COMPLETE:
        raise BadRequestError("Cannot cancel a completed order")
    return None if status == OrderStatus.CANCELLED else cancellation(order)


def expire(order: Mapping[str, Any]) -> Update | None:
    """`expiration:complete`: only an unpaid, live order is cancelled."""
    if order["status"] in (OrderStatus.CREATED, OrderStatus.AWAITING_PAYMENT):
        return cancellation(order)
    return None


LIVE = (OrderStatus.CREATED, OrderStatus.AWAITING_PAYMENT)
COMPLETION: Update = {"$set": {"status": str(OrderStatus.COMPLETE)}, "$unset": {"openUntil": ""}}


def complete(order: Mapping[str, Any]) -> Update | None:
    """`payment:created`: a live order is paid (once). A cancelled order stays cancelled:
    payments refunds a charge that came too late, and the ticket may already be another's."""
    return COMPLETION if order["status"] in LIVE else None


def overdue_since(now: datetime, grace_seconds: float) -> dict[str, Any]:
    """Unpaid orders whose expiry passed more than the grace ago (an index serves it)."""
    return {"openUntil": {"$gt": 0, "$lte": epoch_ms(now) - int(grace_seconds * 1000)}}


# --- storage --------------------------------------------------------------------------------


class Orders:
    """The orders collection, read together with the ticket replica."""

    def __init__(self, db: AsyncDatabase[Document], relay: OutboxRelay | None) -> None:
        self.outbox = Outbox(db[ORDERS], relay)
        self.collection = self.outbox.collection
        self.tickets = db[TICKETS]

    async def create(self, user_id: str, ticket_id: ObjectId, window: int) -> OrderOut:
        ticket = await self.tickets.find_one({"_id": ticket_id})
        if ticket is None:
            raise NotFoundError()
        doc = new_order(user_id, ticket, datetime.now(UTC), window)
        try:
            await self.outbox.insert(doc)
        except DuplicateKeyError:
            # The only unique key a fresh order can collide on is its ticket's reservation.
            raise BadRequestError("Ticket is already reserved") from None
        return order_out(doc, ticket)

    async def get(self, order_id: ObjectId) -> Document | None:
        doc: Document | None = await self.collection.find_one({"_id": order_id})
        return doc

    async def owned(self, order_id: ObjectId, user_id: str) -> Document:
        """The caller's order: 404 when there is none, 401 when it is someone else's."""
        order = await self.get(order_id)
        if order is None:
            raise NotFoundError()
        if order["userId"] != user_id:
            raise NotAuthorizedError()
        return order

    async def of_user(self, user_id: str) -> list[OrderOut]:
        newest_first = [("createdAt", -1), ("_id", -1)]
        cursor = self.collection.find({"userId": user_id}).sort(newest_first)
        return await self.with_tickets([doc async for doc in cursor])

    async def complete(self, order_id: ObjectId) -> Document | None:
        """`complete` as one conditional write, with no read first (it sends no event):
        the paid order, or None when it was not live (or is unknown)."""
        doc: Document | None = await self.collection.find_one_and_update(
            {"_id": order_id, "status": {"$in": [str(s) for s in LIVE]}},
            {**COMPLETION, "$inc": {"version": 1}},
            return_document=ReturnDocument.AFTER,
        )
        return doc

    async def record_refund(self, order_id: ObjectId) -> bool:
        """`payment:refunded`: the order keeps its status (and its version, which the other
        services follow by its events) and says its payment was given back."""
        done = await self.collection.update_one(
            {"_id": order_id, "refunded": {"$exists": False}}, {"$set": {"refunded": True}}
        )
        return done.modified_count == 1

    async def overdue(self, now: datetime, grace_seconds: float) -> list[Document]:
        return await self.collection.find(overdue_since(now, grace_seconds)).to_list()

    async def with_tickets(self, orders: Iterable[Document]) -> list[OrderOut]:
        """Join the replica's current tickets in one query, not one per order."""
        orders = list(orders)
        ids = list({order["ticketId"] for order in orders})
        tickets: dict[ObjectId, Document] = {}
        if ids:
            async for ticket in self.tickets.find({"_id": {"$in": ids}}):
                tickets[ticket["_id"]] = ticket
        return [order_out(order, tickets.get(order["ticketId"])) for order in orders]

    async def transition(self, order: Document, step: Step) -> Document | None:
        """Apply `step` under optimistic concurrency, re-deciding on the fresh document each
        time another writer (a listener, a second request) got there first.

        Returns the changed order, or None when `step` decided there was nothing to change.
        """

        def decide(current: Document | None) -> Update | None:
            if current is None:
                raise LookupError(f"order {order['_id']} vanished")
            return step(current)

        doc, changed = await self.outbox.change(order["_id"], decide, read=order)
        return doc if changed else None


class TicketReplica:
    """The orders service's copy of each ticket `{_id, title, price, version}`."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db[TICKETS]

    async def insert(self, event: TicketCreated) -> Applied:
        doc = {
            "_id": event_object_id(event.id),
            "title": event.title,
            "price": event.price,
            "version": event.version,
        }
        return await insert_first(self.collection, doc)

    async def update(self, event: TicketUpdated) -> Applied:
        """Version N lands only on top of N-1, so updates apply in the order tickets made them."""
        update = {"$set": {"title": event.title, "price": event.price}}
        return await apply_next(self.collection, event_object_id(event.id), event.version, update)


@dataclass(frozen=True)
class Storage:
    """What the orders service's handlers and routes are given."""

    orders: Orders
    tickets: TicketReplica

    @classmethod
    def of(cls, runtime: Runtime) -> Storage:
        return cls(Orders(runtime.db, runtime.relay), TicketReplica(runtime.db))

"""Where orders and the ticket replica are stored, and how they are written.

One order per ticket is decided by MongoDB, not by a look-up: an order holds its ticket in
`activeTicketId` while it is created, awaiting payment or complete, under a sparse unique
index, and cancelling `$unset`s it. (A partial index would say the same on MongoDB, but the
embedded server ignores partial filters; sparse indexes behave the same on both.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ticketing_common.events import TicketCreated, TicketUpdated
from ticketing_common.mongo import Batched, Document, Index, Update
from ticketing_common.outbox import Outbox, OutboxRelay
from ticketing_common.replica import Applied, apply_next, event_object_id, insert_first
from ticketing_common.runtime import Runtime
from ticketing_orders.domain import (
    COMPLETION,
    LIVE,
    REFUND,
    OrderDoc,
    TicketAlreadyReserved,
    TicketDoc,
    overdue_cutoff,
)

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

# A decision on the order as it is now: the update to write, or None (nothing to do).
Step = Callable[[OrderDoc], Update | None]


def _order(doc: Document | None) -> OrderDoc | None:
    """A document of the orders collection, as the domain knows it."""
    return cast(OrderDoc | None, doc)


class Orders:
    """The orders collection; changes that carry events go through its outbox."""

    def __init__(self, db: AsyncDatabase[Document], relay: OutboxRelay | None) -> None:
        self.outbox = Outbox(db[ORDERS], relay)
        self.collection = self.outbox.collection

    async def insert(self, order: OrderDoc) -> None:
        """Store a new order with its events; a live order already holding its ticket wins."""
        try:
            await self.outbox.insert(cast(Document, order))
        except DuplicateKeyError:
            # The only unique key a fresh order can collide on is its ticket's reservation.
            raise TicketAlreadyReserved() from None

    async def get(self, order_id: ObjectId) -> OrderDoc | None:
        return _order(await self.collection.find_one({"_id": order_id}))

    async def of_user(self, user_id: str) -> list[OrderDoc]:
        """A user's orders, all statuses, newest first."""
        newest_first = [("createdAt", -1), ("_id", -1)]
        cursor = self.collection.find({"userId": user_id}).sort(newest_first)
        return [cast(OrderDoc, doc) async for doc in cursor]

    async def complete(self, order_id: ObjectId) -> OrderDoc | None:
        """`completing` as one conditional write, with no read first (it sends no event):
        the paid order, or None when it was not live (or is unknown)."""
        doc = await self.collection.find_one_and_update(
            {"_id": order_id, "status": {"$in": [str(s) for s in LIVE]}},
            {**COMPLETION, "$inc": {"version": 1}},
            return_document=ReturnDocument.AFTER,
        )
        return _order(doc)

    async def record_refund(self, order_id: ObjectId) -> bool:
        """`payment:refunded`: the order keeps its status (and its version, which the other
        services follow by its events) and says its payment was given back."""
        done = await self.collection.update_one(
            {"_id": order_id, "refunded": {"$exists": False}}, REFUND
        )
        return done.modified_count == 1

    async def overdue(self, now: datetime, grace_seconds: float) -> list[OrderDoc]:
        """Unpaid orders whose expiry passed more than the grace ago (an index serves it)."""
        query = {"openUntil": {"$gt": 0, "$lte": overdue_cutoff(now, grace_seconds)}}
        return [cast(OrderDoc, doc) for doc in await self.collection.find(query).to_list()]

    async def transition(self, order: OrderDoc, step: Step) -> OrderDoc | None:
        """Apply `step` under optimistic concurrency, re-deciding on the fresh document each
        time another writer (a listener, a second request) got there first.

        Returns the changed order, or None when `step` decided there was nothing to change.
        """

        def decide(current: Document | None) -> Update | None:
            if current is None:
                raise LookupError(f"order {order['_id']} vanished")
            return step(cast(OrderDoc, current))

        doc, changed = await self.outbox.change(order["_id"], decide, read=cast(Document, order))
        return _order(doc) if changed else None


class TicketReplica:
    """The orders service's copy of each ticket `{_id, title, price, version}`."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db[TICKETS]
        self.batched = Batched(self.collection)  # each order's read, many in one under load

    async def get(self, ticket_id: ObjectId) -> TicketDoc | None:
        return cast(TicketDoc | None, await self.batched.find_one(ticket_id))

    async def by_id(self, ticket_ids: Iterable[ObjectId]) -> dict[ObjectId, TicketDoc]:
        """The tickets of many orders in one query, not one per order."""
        ids = list(set(ticket_ids))
        found: dict[ObjectId, TicketDoc] = {}
        if ids:
            async for ticket in self.collection.find({"_id": {"$in": ids}}):
                found[ticket["_id"]] = cast(TicketDoc, ticket)
        return found

    async def insert(self, event: TicketCreated) -> Applied:
        ticket: TicketDoc = {
            "_id": event_object_id(event.id),
            "title": event.title,
            "price": event.price,
            "version": event.version,
        }
        return await insert_first(self.batched, cast(Document, ticket))

    async def update(self, event: TicketUpdated) -> Applied:
        """Version N lands only on top of N-1, so updates apply in the order tickets made them."""
        update = {"$set": {"title": event.title, "price": event.price}}
        return await apply_next(self.collection, event_object_id(event.id), event.version, update)


@dataclass(frozen=True)
class Storage:
    """What the orders service's handlers, routes and sweeps are given."""

    orders: Orders
    tickets: TicketReplica

    @classmethod
    def of(cls, runtime: Runtime) -> Storage:
        return cls(Orders(runtime.db, runtime.relay), TicketReplica(runtime.db))

"""Tickets: request bodies, the rules of editing and reserving, and their storage.

Every write to a ticket is conditional on the ticket's write revision `rev`, which every write
raises: a writer that lost a race re-reads the ticket and decides again, so a concurrent edit
and a reservation never overwrite each other. `version` is the revision the other services see:
it rises by exactly one with each visible change, together with the `ticket:updated` event that
carries it (one atomic write, through the outbox).

A reservation's order id is kept in `releasedOrders` once that order is cancelled, so that a
late or redelivered `order:created` of a cancelled order cannot reserve the ticket again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from bson import ObjectId
from pydantic import AfterValidator, BaseModel
from pymongo.asynchronous.database import AsyncDatabase

from ticketing_common.errors import BadRequestError, NotAuthorizedError, NotFoundError
from ticketing_common.events import TicketCreated, TicketUpdated
from ticketing_common.mongo import Document, Index, update_versioned
from ticketing_common.outbox import Outbox, OutboxRelay, add_events, with_events
from ticketing_common.validation import Money, required, rule, trimmed

COLLECTION = "tickets"
TITLE_MAX_LENGTH = 200

INDEXES = {
    COLLECTION: [
        # Present only while a ticket is reserved or sold; an order holds at most one ticket.
        # The list of available tickets walks `_id` newest first (every collection has that
        # index, and ObjectIds start with their creation time): a compound index that would
        # serve both, `(orderId, _id)`, breaks inserts on the embedded nx-27017 server.
        Index([("orderId", 1)], unique=True, sparse=True),
    ],
}

Update = dict[str, dict[str, Any]]


def _title(value: Any) -> str:
    title = trimmed(value)
    if not title or len(title) > TITLE_MAX_LENGTH:
        raise ValueError("blank or too long")
    return title


Title = Annotated[str, AfterValidator(_title), rule("Title is required")]


class NewTicket(BaseModel):
    title: Title = required()
    price: Annotated[Money, rule("Price must be greater than 0")] = required()


class TicketEdit(BaseModel):
    title: Title = required()
    price: Annotated[Money, rule("Price must be provided and must be greater than 0")] = required()


def _between(low: int, high: int | None) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value < low or (high is not None and value > high):
            raise ValueError("out of range")
        return value

    return check


Limit = Annotated[int, AfterValidator(_between(1, 100)), rule("Limit must be between 1 and 100")]
Offset = Annotated[int, AfterValidator(_between(0, None)), rule("Offset must be 0 or more")]


def to_api(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The SPEC's ticket: `orderId` only while reserved; internals never leave the service."""
    ticket: dict[str, Any] = {
        "id": str(doc["_id"]),
        "title": doc["title"],
        "price": doc["price"],
        "userId": doc["userId"],
        "version": doc["version"],
    }
    if doc.get("orderId"):
        ticket["orderId"] = doc["orderId"]
    return ticket


def _updated_event(doc: Mapping[str, Any], **changes: Any) -> TicketUpdated:
    """The `ticket:updated` of the change about to be written: the next version."""
    state = {**doc, **changes}
    return TicketUpdated(
        id=str(doc["_id"]),
        version=doc["version"] + 1,
        title=state["title"],
        price=state["price"],
        userId=state["userId"],
        orderId=state.get("orderId"),
    )


# --- decisions: what a change does to a ticket as read; no I/O --------------------------------


def edit(doc: Document | None, user_id: str, title: str, price: float) -> Update:
    """The owner's edit, checked in SPEC order after validation: 404, reserved, not the owner."""
    if doc is None:
        raise NotFoundError()
    if doc.get("orderId"):
        raise BadRequestError("Cannot edit a reserved ticket")
    if doc["userId"] != user_id:
        raise NotAuthorizedError()
    changes = {"title": title, "price": price}
    return add_events(
        doc,
        {"$set": changes, "$inc": {"version": 1}},
        _updated_event(doc, **changes, orderId=None),
    )


def reserve(doc: Document, order_id: str) -> Update | None:
    """`order:created`: hold the ticket for the order; None when there is nothing to do."""
    if doc.get("orderId") == order_id or order_id in (doc.get("releasedOrders") or {}):
        return None  # a repeat, or an order that was cancelled before this event arrived
    if doc.get("orderId"):
        return None  # another order holds it: a replayed or late event never takes it over
    return add_events(
        doc,
        {"$set": {"orderId": order_id}, "$inc": {"version": 1}},
        _updated_event(doc, orderId=order_id),
    )


def release(doc: Document, order_id: str) -> Update | None:
    """`order:cancelled`: free the ticket if this order holds it; remember the order either way."""
    released = f"releasedOrders.{order_id}"
    if doc.get("orderId") == order_id:
        return add_events(
            doc,
            {"$unset": {"orderId": ""}, "$set": {released: True}, "$inc": {"version": 1}},
            _updated_event(doc, orderId=None),
        )
    if order_id in (doc.get("releasedOrders") or {}):
        return None  # a repeat
    # Another order holds it, or this order's `order:created` has not arrived (yet): nothing
    # the other services can see changes, so neither `version` nor an event.
    return {"$set": {released: True}}


class Tickets:
    """The tickets collection."""

    def __init__(self, db: AsyncDatabase[Document], relay: OutboxRelay | None) -> None:
        self.outbox = Outbox(db[COLLECTION], relay)
        self.collection = self.outbox.collection

    async def create(self, title: str, price: float, user_id: str) -> Document:
        doc: Document = {
            "_id": ObjectId(),
            "title": title,
            "price": price,
            "userId": user_id,
            "version": 0,
            "rev": 0,
        }
        event = TicketCreated(
            id=str(doc["_id"]), version=0, title=title, price=price, userId=user_id
        )
        await self.outbox.insert(with_events(doc, event))
        return doc

    async def get(self, ticket_id: ObjectId) -> Document | None:
        doc: Document | None = await self.collection.find_one({"_id": ticket_id})
        return doc

    async def available(self, limit: int, offset: int) -> list[Document]:
        """Tickets nobody has reserved, newest first."""
        cursor = (
            self.collection.find({"orderId": {"$exists": False}})
            .sort([("_id", -1)])
            .skip(offset)
            .limit(limit)
        )
        return await cursor.to_list()

    async def write_if_unchanged(self, doc: Document, update: Update) -> Document | None:
        """Apply `update` only if nobody wrote since `doc` was read; None if someone did."""
        return await update_versioned(self.collection, doc["_id"], doc["rev"], update, field="rev")

    async def change(
        self, ticket_id: ObjectId, decide: Callable[[Document | None], Update | None]
    ) -> tuple[Document | None, bool]:
        """The ticket as it now is, and whether `decide` changed it (see `change_versioned`)."""
        return await self.outbox.change(ticket_id, decide, field="rev")

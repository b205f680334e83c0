"""The tickets collection: its indexes, and reading and writing tickets (each write with the
events it causes, through the outbox)."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from ticketing_common.mongo import Document, Index, Update
from ticketing_common.outbox import Outbox, OutboxRelay, with_events
from ticketing_tickets.domain import TicketDoc, new_ticket
from ticketing_tickets.events.publishers import ticket_created

COLLECTION = "tickets"

INDEXES = {
    COLLECTION: [
        # Present only while a ticket is reserved or sold; an order holds at most one ticket.
        # The list of available tickets walks `_id` newest first (every collection has that
        # index, and ObjectIds start with their creation time): a compound index that would
        # serve both, `(orderId, _id)`, breaks inserts on the embedded nx-27017 server.
        Index([("orderId", 1)], unique=True, sparse=True),
    ],
}


def _ticket(doc: Document | None) -> TicketDoc | None:
    # The outbox works on plain documents; what this collection holds are tickets.
    return cast(TicketDoc | None, doc)


class Tickets:
    """The tickets collection."""

    def __init__(self, db: AsyncDatabase[Document], relay: OutboxRelay | None) -> None:
        self.outbox = Outbox(db[COLLECTION], relay)
        self.collection = self.outbox.collection

    async def create(self, title: str, price: float, user_id: str) -> TicketDoc:
        """Put a ticket up for sale; its `ticket:created` is stored with it."""
        ticket = new_ticket(title, price, user_id)
        await self.outbox.insert(with_events(ticket, ticket_created(ticket)))
        return ticket

    async def get(self, ticket_id: ObjectId) -> TicketDoc | None:
        return _ticket(await self.collection.find_one({"_id": ticket_id}))

    async def available(self, limit: int, offset: int) -> list[TicketDoc]:
        """Tickets nobody has reserved, newest first."""
        cursor = (
            self.collection.find({"orderId": {"$exists": False}})
            .sort([("_id", -1)])
            .skip(offset)
            .limit(limit)
        )
        return cast(list[TicketDoc], await cursor.to_list())

    async def change(
        self, ticket_id: ObjectId, decide: Callable[[TicketDoc | None], Update | None]
    ) -> tuple[TicketDoc | None, bool]:
        """The ticket as it now is, and whether `decide` changed it: `decide` is given the
        ticket as read and decides again whenever another write came first (the write is
        conditional on `rev`; see `change_versioned`)."""
        doc, changed = await self.outbox.change(
            ticket_id, lambda read: decide(_ticket(read)), field="rev"
        )
        return _ticket(doc), changed

"""The tickets collection: its indexes, and reading and writing tickets (each write with the
events it causes, through the outbox)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import cast

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from ticketing_common.coalesce import Coalesced
from ticketing_common.mongo import Document, Index, Update
from ticketing_common.outbox import Outbox, OutboxRelay, with_events
from ticketing_common.runtime import Runtime
from ticketing_tickets.domain import TicketDoc, listing_key, new_ticket
from ticketing_tickets.events.publishers import ticket_created

log = logging.getLogger("ticketing.tickets.repository")

COLLECTION = "tickets"
LISTING = "listing"
# What a listed ticket is answered with (`TicketOut`), and its place in the list.
LISTED = {"title": 1, "price": 1, "userId": 1, "version": 1, "orderId": 1, LISTING: 1}
BACKFILL_BATCH = 1000

INDEXES = {
    COLLECTION: [
        # Present only while a ticket is reserved or sold; an order holds at most one ticket.
        Index([("orderId", 1)], unique=True, sparse=True),
        # Present only while a ticket is open: the open-ticket page is a walk of this index,
        # newest first, from its start or from a cursor. (`orderId` absent, sorted by `_id`,
        # is no index range on nx-27017: it sorted every open ticket for each page.)
        Index([(LISTING, -1)], sparse=True),
    ],
}


# A page of open tickets, and the listing key to continue after when more follow.
Page = tuple[list[TicketDoc], str | None]


def _ticket(doc: Document | None) -> TicketDoc | None:
    # The outbox works on plain documents; what this collection holds are tickets.
    return cast(TicketDoc | None, doc)


class Tickets:
    """The tickets collection."""

    def __init__(self, db: AsyncDatabase[Document], relay: OutboxRelay | None) -> None:
        self.outbox = Outbox(db[COLLECTION], relay)
        self.collection = self.outbox.collection
        # Every visitor's home page is a list page: concurrent requests for one share its read.
        self.pages: Coalesced[tuple[int, int, str | None], Page] = Coalesced()

    async def create(self, title: str, price: float, user_id: str) -> TicketDoc:
        """Put a ticket up for sale; its `ticket:created` is stored with it."""
        ticket = new_ticket(title, price, user_id)
        await self.outbox.insert(with_events(ticket, ticket_created(ticket)))
        self.pages.changed()
        return ticket

    async def get(self, ticket_id: ObjectId) -> TicketDoc | None:
        return _ticket(await self.collection.find_one({"_id": ticket_id}))

    async def available(self, limit: int, offset: int = 0, after: str | None = None) -> Page:
        """Up to `limit` open tickets newest first (past `offset`, listed before `after`), and
        the listing key to continue after when there are more; one read of the listing index,
        shared by the requests for the same page that come while it is in flight."""
        return await self.pages.read(
            (limit, offset, after), lambda: self._page(limit, offset, after)
        )

    async def _page(self, limit: int, offset: int, after: str | None) -> Page:
        where = {LISTING: {"$lt": after}} if after else {LISTING: {"$exists": True}}
        cursor = (
            self.collection.find(where, LISTED).sort([(LISTING, -1)]).skip(offset).limit(limit + 1)
        )
        found = cast(list[TicketDoc], await cursor.to_list())
        page = found[:limit]
        return page, (page[-1]["listing"] if len(found) > limit else None)

    async def change(
        self, ticket_id: ObjectId, decide: Callable[[TicketDoc | None], Update | None]
    ) -> tuple[TicketDoc | None, bool]:
        """The ticket as it now is, and whether `decide` changed it: `decide` is given the
        ticket as read and decides again whenever another write came first (the write is
        conditional on `rev`; see `change_versioned`)."""
        doc, changed = await self.outbox.change(
            ticket_id, lambda read: decide(_ticket(read)), field="rev"
        )
        if changed:
            self.pages.changed()
        return _ticket(doc), changed

    async def list_unlisted(self) -> int:
        """Give every open ticket written before `listing` existed its key, newest first (the
        first page fills first); how many it listed.

        Each write is conditional on `orderId` being absent, so a reservation that came first
        wins; it raises no `rev`, since no decision reads `listing`. Idempotent: replicas that
        start together do the same writes, and an interrupted run resumes at the next start."""
        listed, last = 0, None
        while batch := await self._unlisted(last):
            writes = [
                UpdateOne(
                    {"_id": doc["_id"], "orderId": {"$exists": False}},
                    {"$set": {LISTING: listing_key(doc["_id"])}},
                )
                for doc in batch
            ]
            await self.collection.bulk_write(writes, ordered=False)
            self.pages.changed()
            listed, last = listed + len(batch), batch[-1]["_id"]
        return listed

    async def _unlisted(self, before: ObjectId | None) -> list[Document]:
        # Newest first from the last batch on, so the walk ends even if a write matched none.
        where: Document = {"orderId": {"$exists": False}, LISTING: {"$exists": False}}
        if before is not None:
            where["_id"] = {"$lt": before}
        cursor = self.collection.find(where, {"_id": 1}).sort([("_id", -1)]).limit(BACKFILL_BATCH)
        return await cursor.to_list()


async def _list_unlisted(tickets: Tickets) -> None:
    try:
        listed = await tickets.list_unlisted()
    except Exception as exc:  # the next start tries again; the tickets stay unlisted till then
        log.warning("listing the open tickets stored without a listing key failed: %r", exc)
        return
    if listed:
        log.info("listed %d open tickets stored without a listing key", listed)


@asynccontextmanager
async def listed_at_start(runtime: Runtime) -> AsyncIterator[None]:
    """A start-up step (a service resource): list the open tickets stored before `listing`
    existed, in the background, so that a large backlog does not hold up start-up (nx-27017
    writes about 600 of them a second)."""
    task = asyncio.create_task(_list_unlisted(Tickets(runtime.db, None)))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

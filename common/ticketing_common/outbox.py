"""The outbox: events written in the same MongoDB write as the change that causes them.

Pending events live in the changed document, under `outbox.<eventId>`, each with `seq`, the
document's event counter `outboxRev` at the time it was added (a counter that never goes back,
so a document's events keep the order they were written in, whatever the hosts' clocks say).
`outboxAt` (epoch milliseconds, the oldest pending event) is indexed, so the crash backstop
finds pending documents without reading the collection.

The writer publishes the events it just stored (`Outbox`); a periodic sweep publishes what a
crashed writer left. Either publishes with `Nats-Msg-Id` = event id, so JetStream drops
repeats, and then removes what it published: the whole outbox if `outboxRev` is still what it
read, else only its own events by key. So no relay, however slow or stale, removes an event it
did not publish. Removals are batched: queued as events are published, they are written at the
next sweep tick (or once many are waiting), one ordered bulk write per collection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from ticketing_common import tracing
from ticketing_common.events import Event
from ticketing_common.metrics import Metrics
from ticketing_common.moments import now_ms
from ticketing_common.mongo import (
    Batched,
    Decide,
    Document,
    Index,
    Update,
    change_versioned,
    merge,
)
from ticketing_common.periodic import Every

if TYPE_CHECKING:
    from ticketing_common.bus import EventBus  # the relay is handed one: no NATS to load here

log = logging.getLogger("ticketing.outbox")

# Every collection with an outbox carries this index: the sweep reads only pending documents.
OUTBOX_INDEX = Index([("outboxAt", 1)], sparse=True)
PROJECTION = {"outbox": 1, "outboxRev": 1, "outboxAt": 1}


def _entries(events: Sequence[Event], rev: int) -> dict[str, Document]:
    cause = tracing.carrier()  # the trace of the request or message that caused them
    return {
        uuid.uuid4().hex: {"subject": str(e.subject), "data": e.payload(), "seq": rev + i, **cause}
        for i, e in enumerate(events, start=1)
    }


def with_events(doc: Mapping[str, Any], *events: Event) -> Document:
    """A new document that carries its first events."""
    return {**doc, "outbox": _entries(events, 0), "outboxRev": len(events), "outboxAt": now_ms()}


def add_events(doc: Mapping[str, Any], update: Update, *events: Event) -> Update:
    """An update of `doc` (as read; the write must be conditional on it) that also stores
    `events` in its outbox, after the events it already holds."""
    outbox: Update = {"$inc": {"outboxRev": len(events)}, "$min": {"outboxAt": now_ms()}}
    entries = _entries(events, doc.get("outboxRev", 0))
    if entries:  # an empty `$set` is refused
        outbox["$set"] = {f"outbox.{event_id}": entry for event_id, entry in entries.items()}
    return merge(update, outbox)


def pending_events(docs: Iterable[Document]) -> list[Document]:
    """The events still waiting in `docs`, in the order they were written."""
    return [entry for doc in docs for _, entry in _in_order(doc)]


def _in_order(doc: Document) -> list[tuple[str, Document]]:
    return sorted((doc.get("outbox") or {}).items(), key=lambda kv: kv[1]["seq"])


class _Removals:
    """One collection's published events waiting to be removed from their documents."""

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection
        # (document id, the `outboxRev` read, the ids of the events published from that read)
        self.waiting: list[tuple[Any, int | None, list[str]]] = []
        # Every event id published and not yet removed, by document: never published again.
        self.published: dict[Any, set[str]] = {}

    def add(self, doc_id: Any, rev: int | None, event_ids: list[str]) -> None:
        self.waiting.append((doc_id, rev, event_ids))
        if event_ids:
            self.published.setdefault(doc_id, set()).update(event_ids)

    def removed(self, done: list[tuple[Any, int | None, list[str]]]) -> None:
        for doc_id, _, event_ids in done:
            held = self.published.get(doc_id)
            if held is not None:
                held.difference_update(event_ids)
                if not held:
                    del self.published[doc_id]


def _removal(doc_id: Any, rev: int | None, event_ids: list[str]) -> list[UpdateOne]:
    """The whole outbox if `outboxRev` is still `rev` (everything it held then was published
    here), else only the events published here: the second cannot match when the first did,
    since removing leaves `outboxRev` as it is."""
    ops = [UpdateOne({"_id": doc_id, "outboxRev": rev}, {"$unset": {"outbox": "", "outboxAt": ""}})]
    if event_ids:
        mine = {f"outbox.{event_id}": "" for event_id in event_ids}
        ops.append(UpdateOne({"_id": doc_id, "outboxRev": {"$ne": rev}}, {"$unset": mine}))
    return ops


class OutboxRelay:
    """Publishes pending events: those a writer hands over at once, and a periodic sweep.

    What it published is removed from the documents by `flush`, at each sweep tick, in
    `drain` and `stop`, and as soon as `flush_at` documents wait.
    """

    def __init__(
        self,
        bus: EventBus,
        collections: Sequence[AsyncCollection[Document]],
        *,
        sweep_seconds: float = 1.0,
        grace_seconds: float | None = None,
        concurrency: int = 128,
        flush_at: int = 1000,
        metrics: Metrics | None = None,
    ) -> None:
        self.bus = bus
        self.metrics = metrics or Metrics()
        self.collections = list(collections)
        self.sweep_seconds = sweep_seconds
        # A pending event younger than this is its writer's to publish; the sweep leaves it.
        self.grace_seconds = sweep_seconds if grace_seconds is None else grace_seconds
        self.flush_at = flush_at
        self._slots = asyncio.Semaphore(concurrency)
        self._handed: set[asyncio.Task[int]] = set()
        self._removals: dict[AsyncCollection[Document], _Removals] = {}
        self._flushing = asyncio.Lock()
        self._timer = Every("outbox-sweep", sweep_seconds, self.sweep)

    @property
    def pending_removals(self) -> int:
        """How many published documents wait for their events to be removed."""
        return sum(len(r.waiting) for r in self._removals.values())

    def hand_over(self, collection: AsyncCollection[Document], doc: Document) -> None:
        """Publish the events of a document just written, without holding up the writer."""
        if doc.get("outbox"):
            task = asyncio.create_task(self._publish_guarded(collection, doc))
            self._handed.add(task)
            task.add_done_callback(self._handed.discard)

    async def _publish_guarded(self, collection: AsyncCollection[Document], doc: Document) -> int:
        try:
            return await self.publish_doc(collection, doc)
        except Exception as exc:  # the sweep publishes it later
            log.warning("publishing the events of %s failed: %r", doc.get("_id"), exc)
            return 0

    async def publish_doc(self, collection: AsyncCollection[Document], doc: Document) -> int:
        """Publish `doc`'s events in order, each after the previous one's ack, except those this
        relay already published and has not yet removed; then queue their removal."""
        # Collections compare by database and name: every handle of one shares its queue.
        removals = self._removals.setdefault(collection, _Removals(collection))
        async with self._slots:
            published = removals.published.get(doc["_id"], ())
            entries = [(i, entry) for i, entry in _in_order(doc) if i not in published]
            for event_id, entry in entries:
                data = json.dumps(entry["data"], separators=(",", ":")).encode()
                await self.bus.publish(
                    entry["subject"], data, event_id, headers=tracing.headers_of(entry)
                )
            removals.add(doc["_id"], doc.get("outboxRev"), [i for i, _ in entries])
        if self.pending_removals >= self.flush_at and not self._flushing.locked():
            await self.flush()
        return len(entries)

    async def flush(self) -> int:
        """Remove the events published so far from their documents: one ordered bulk write per
        collection. What cannot be written now stays queued for the next flush (until then
        the sweep may find it, and this relay does not publish it again). Returns how many
        published documents were cleaned up."""
        written = 0
        async with self._flushing:
            for removals in list(self._removals.values()):
                batch, removals.waiting = removals.waiting, []
                if not batch:
                    continue
                ops = [op for doc_id, rev, ids in batch for op in _removal(doc_id, rev, ids)]
                done = False
                try:
                    await removals.collection.bulk_write(ops, ordered=True)
                    done = True
                except Exception as exc:  # kept for the next flush; an event is never lost
                    name = getattr(removals.collection, "name", "?")
                    log.warning(
                        "removing %d published outboxes of %s failed: %r", len(batch), name, exc
                    )
                finally:
                    if done:
                        removals.removed(batch)
                        written += len(batch)
                    else:
                        removals.waiting[:0] = batch
        return written

    async def sweep(self, older_than: float | None = None) -> int:
        """Publish every event pending longer than `older_than` seconds (default: the grace).

        Removals queued so far are written first, so what was published is not found again."""
        await self.flush()
        age = self.grace_seconds if older_than is None else older_than
        cutoff = now_ms() - int(age * 1000)
        sent = 0
        for collection in self.collections:
            query = {"outboxAt": {"$gt": 0, "$lte": cutoff}}
            docs = await collection.find(query, PROJECTION).to_list()
            self._measure(collection, docs)  # before publishing: an outage shows too
            counts = await asyncio.gather(*(self.publish_doc(collection, d) for d in docs))
            sent += sum(counts)
        return sent

    def _measure(self, collection: AsyncCollection[Document], docs: list[Document]) -> None:
        """The collection's outbox gauges, from the documents the sweep read (no read of its
        own): how many events they hold, and how long the oldest has waited."""
        events = sum(len(doc.get("outbox") or {}) for doc in docs)
        oldest = min((int(doc["outboxAt"]) for doc in docs if doc.get("outboxAt")), default=None)
        age = 0.0 if oldest is None else max(0, now_ms() - oldest) / 1000
        self.metrics.outbox_pending.labels(collection.name).set(events)
        self.metrics.outbox_oldest_age.labels(collection.name).set(age)

    async def drain(self) -> None:
        """Wait for the events handed over so far to be published (or given up to the sweep),
        then remove what was published."""
        while self._handed:
            await asyncio.wait(set(self._handed))
        await self.flush()

    async def start(self) -> None:
        """Publish what an earlier process left, then sweep on a timer."""
        try:
            await self.sweep(older_than=0)
        except Exception as exc:
            log.warning("first outbox sweep failed: %r", exc)
        self._timer.start()

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Finish what is in flight and sweep once more, so events stored just before
        shutdown still go out, then remove what was published; work stuck longer than the
        grace is cancelled."""
        task = self._timer.stopping()
        pending = {*self._handed, *([task] if task else [])}
        if pending:
            await asyncio.wait(pending, timeout=grace_seconds)
        for late in pending:
            late.cancel()
        if pending:
            await asyncio.wait(pending)
        try:
            await self.sweep(older_than=0)
        except Exception as exc:
            log.warning("final outbox sweep failed: %r", exc)
        await self.flush()


class Outbox:
    """One collection's writes that carry events: stored in one write, then handed to the relay.

    Without a relay (a test of storage alone) the events wait for a sweep.
    """

    def __init__(self, collection: AsyncCollection[Document], relay: OutboxRelay | None) -> None:
        self.collection = collection
        self.relay = relay
        # Inserts and first reads: under load, many requests' in one command.
        self.batched = Batched(collection)

    def _written(self, doc: Document) -> None:
        if self.relay is not None:
            self.relay.hand_over(self.collection, doc)

    async def insert(self, doc: Document) -> None:
        """Insert a document built with `with_events`."""
        await self.batched.insert_one(doc)
        self._written(doc)

    async def change(
        self,
        doc_id: ObjectId,
        decide: Decide,
        *,
        field: str = "version",
        read: Document | None = None,
    ) -> tuple[Document | None, bool]:
        """`change_versioned`, publishing the events the change stored."""
        if read is None:  # (none found: change_versioned reads again, and decides on None)
            read = await self.batched.find_one(doc_id)
        doc, changed = await change_versioned(
            self.collection, doc_id, decide, field=field, read=read
        )
        if changed and doc is not None:
            self._written(doc)
        return doc, changed

"""The outbox: events written in the same MongoDB write as the change that causes them.

Pending events live in the changed document, under `outbox.<eventId>`, and every write that
adds one raises `outboxRev`. The relay publishes them with `Nats-Msg-Id` = event id and then
removes the outbox, but only if `outboxRev` is unchanged, so an event added meanwhile stays.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from ticketing_common.bus import EventBus
from ticketing_common.events import Event
from ticketing_common.mongo import Document

log = logging.getLogger("ticketing.outbox")


def _entry(event: Event) -> tuple[str, Document]:
    return uuid.uuid4().hex, {
        "subject": str(event.subject),
        "data": event.payload(),
        "seq": time.time_ns(),
    }


def with_events(doc: Mapping[str, Any], *events: Event) -> Document:
    """A new document that carries its first events."""
    return {**doc, "outbox": dict(_entry(e) for e in events), "outboxRev": 1}


def add_events(
    update: Mapping[str, Mapping[str, Any]], *events: Event
) -> dict[str, dict[str, Any]]:
    """An update document that also stores `events` in the outbox."""
    changes = {k: dict(v) for k, v in update.items()}
    for event_id, entry in map(_entry, events):
        changes.setdefault("$set", {})[f"outbox.{event_id}"] = entry
    changes.setdefault("$inc", {})["outboxRev"] = 1
    return changes


class OutboxRelay:
    """Publishes pending events of the given collections; woken after each write and on a timer."""

    def __init__(
        self,
        bus: EventBus,
        collections: Sequence[AsyncCollection[Document]],
        *,
        sweep_seconds: float = 1.0,
    ) -> None:
        self.bus = bus
        self.collections = list(collections)
        self.sweep_seconds = sweep_seconds
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def kick(self) -> None:
        """Publish soon: called after a write that stored events."""
        self._wake.set()

    async def publish_pending(self) -> int:
        """One pass over every collection; returns how many events went out."""
        sent = 0
        for collection in self.collections:
            cursor = collection.find({"outbox": {"$exists": True}}, {"outbox": 1, "outboxRev": 1})
            async for doc in cursor:
                sent += await self._publish_doc(collection, doc)
        return sent

    async def _publish_doc(self, collection: AsyncCollection[Document], doc: Document) -> int:
        entries = sorted((doc.get("outbox") or {}).items(), key=lambda kv: kv[1]["seq"])
        for event_id, entry in entries:
            data = json.dumps(entry["data"], separators=(",", ":")).encode()
            await self.bus.publish(entry["subject"], data, event_id)
        await collection.update_one(
            {"_id": doc["_id"], "outboxRev": doc.get("outboxRev")},
            {"$unset": {"outbox": "", "outboxRev": ""}},
        )
        return len(entries)

    async def run(self) -> None:
        # Stopped by a flag, never by cancellation: on 3.11 both wait_for and asyncio.timeout
        # can swallow a cancel that lands as their own timeout fires, and the loop runs on.
        while not self._stopping:
            waiter = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait({waiter}, timeout=self.sweep_seconds)
            waiter.cancel()
            self._wake.clear()
            try:
                await self.publish_pending()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep relaying through an outage
                log.warning("outbox relay pass failed: %r", exc)

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self.run(), name="outbox-relay")
        self.kick()

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Finish the pass in flight and make a last one, so events stored just before
        shutdown still go out; a pass stuck longer than the grace is cancelled."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self.kick()
        await asyncio.wait({task}, timeout=grace_seconds)
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
        try:
            await self.publish_pending()
        except Exception as exc:
            log.warning("final outbox pass failed: %r", exc)


def pending_events(docs: Iterable[Document]) -> list[Document]:
    """The events still waiting in `docs`, oldest first (for tests and operators)."""
    entries = [e for d in docs for e in (d.get("outbox") or {}).values()]
    return sorted(entries, key=lambda e: e["seq"])

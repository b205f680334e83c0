"""Payments' storage: its collections and their indexes, the orders collection (each order's
replica with its payments, see `domain.Order`), the Stripe events already handled, and the move
of payments an earlier release stored apart. Each change of an order is one write conditional
on its `rev`, decided by `domain`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import cast

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ticketing_common.errors import NotFoundError
from ticketing_common.events import OrderCancelled, OrderCreated, OrderStatus
from ticketing_common.metrics import Metrics
from ticketing_common.moments import epoch_ms, now_ms
from ticketing_common.mongo import Document, Index, Update, object_id
from ticketing_common.outbox import Outbox, OutboxRelay
from ticketing_common.replica import Applied, apply_next, event_object_id, insert_first
from ticketing_payments.domain import (
    MAX_ATTEMPTS,
    Attempt,
    Order,
    PaymentStatus,
    attempt_key,
    attempt_slot,
    fail_update,
    new_attempt,
    refund_due,
    refund_due_update,
    refunded_update,
    settle_update,
    start_update,
)

log = logging.getLogger("ticketing.payments")

ORDERS = "orders"
WEBHOOK_EVENTS = "webhook_events"
# Where payments were stored before they moved into their orders (see `upgrade_storage`).
LEGACY_PAYMENTS = "payments"

INDEXES = {
    ORDERS: [Index([("pendingAt", 1)], sparse=True), Index([("refundDueAt", 1)], sparse=True)],
    # Stripe retries a delivery for up to three days; ids older than that need not be kept.
    WEBHOOK_EVENTS: [Index([("receivedAt", 1)], options={"expireAfterSeconds": 30 * 86400})],
}

# A decision of `domain`: the update of the order as read, or None (nothing to do).
Decision = Callable[[Order | None], Update | None]
# What becomes of a payment, as counted: Stripe charged it, refused it, gave it back.
OUTCOMES = ("succeeded", "declined", "refunded")


def as_order(doc: Document | None) -> Order | None:
    """An order's document as MongoDB returns it, typed: every write of the collection is this
    module's, so its documents have `Order`'s shape."""
    return cast("Order | None", doc)


def as_document(order: Order | None) -> Document | None:
    return cast("Document | None", order)


class OrderReplicas:
    """The orders collection: each order as its events made it, with its payments."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        relay: OutboxRelay | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.outbox = Outbox(db[ORDERS], relay)
        self.collection = self.outbox.collection
        self.payments = (metrics or Metrics()).payments
        for outcome in OUTCOMES:  # each served from the start, at 0
            self.payments.labels(outcome)

    async def get(self, order_id: str) -> Order | None:
        oid = object_id(order_id)
        if oid is None:
            return None
        return as_order(await self.collection.find_one({"_id": oid}))

    async def insert(self, event: OrderCreated) -> Applied:
        doc = {
            "_id": event_object_id(event.id),
            "price": event.ticket.price,
            "status": str(event.status),
            "userId": event.userId,
            "version": event.version,
            "expiresAt": _aware(event.expiresAt),
            "rev": 0,
            "attempts": {},
            "tries": 0,
        }
        return await insert_first(self.outbox.batched, doc)

    async def cancel(self, event: OrderCancelled) -> Applied:
        """Version N applies only on top of N-1; `rev` moves, so no charge decided on the
        order as it was lands after it."""
        update = {"$set": {"status": str(OrderStatus.CANCELLED)}, "$inc": {"rev": 1}}
        return await apply_next(self.collection, event_object_id(event.id), event.version, update)

    async def start(
        self, order_id: str, user_id: str, token: str, hold: timedelta
    ) -> tuple[Order, str, bool]:
        """Record the attempt with this card before Stripe is called, or find it when this is a
        repeat. Returns the order, the attempt's slot, and whether this request answers for
        the attempt: the one that recorded it, or a repeat once the one before let go.

        One write when the order may be paid and the card is new (the query holds what
        `domain.start_update` checks); a read first otherwise."""
        oid = object_id(order_id)
        if oid is None:
            raise NotFoundError()
        now = datetime.now(UTC)
        slot = attempt_slot(token)
        payable = {
            "_id": oid,
            "userId": user_id,
            "status": {"$ne": str(OrderStatus.CANCELLED)},
            "kept": {"$exists": False},
            "expiresAt": {"$gt": now},
            "tries": {"$lt": MAX_ATTEMPTS},
            f"attempts.{slot}": {"$exists": False},
        }
        attempt = new_attempt(order_id, token, epoch_ms(now), hold)
        recorded = as_order(
            await self.collection.find_one_and_update(
                payable,
                {
                    "$set": {f"attempts.{slot}": attempt},
                    "$min": {"pendingAt": epoch_ms(now)},
                    "$inc": {"rev": 1, "tries": 1},
                },
                return_document=ReturnDocument.AFTER,
            )
        )
        if recorded is not None:
            return recorded, slot, True
        order, mine = await self._apply(oid, lambda d: start_update(d, user_id, token, now, hold))
        assert order is not None, "start_update refuses a missing order"
        return order, slot, mine

    async def let_go(self, order_id: str, slot: str) -> None:
        """The request answering for an attempt ends without an outcome: a repeat may take it."""
        await self.collection.update_one(
            {"_id": ObjectId(order_id)},
            {"$set": {f"attempts.{slot}.heldUntil": now_ms()}, "$inc": {"rev": 1}},
        )

    async def settle(
        self, order_id: str, slot: str, stripe_id: str, read: Order | None = None
    ) -> Order:
        """Record the charge: kept for the order if it may keep it, else due for a refund."""
        now = datetime.now(UTC)
        return await self._change(
            order_id,
            lambda d: settle_update(d, slot, stripe_id, now),
            read=read,
            counted="succeeded",
        )

    async def fail(self, order_id: str, slot: str, stripe_id: str | None, message: str) -> Order:
        now = datetime.now(UTC)
        return await self._change(
            order_id, lambda d: fail_update(d, slot, stripe_id, message, now), counted="declined"
        )

    async def mark_refund_due(self, order_id: str, slot: str, reason: str) -> Attempt | None:
        """The payment, due for a refund now; None when it is not a succeeded one."""
        now = datetime.now(UTC)
        order = await self._change(order_id, lambda d: refund_due_update(d, slot, reason, now))
        return refund_due(order, slot)

    async def refunded(self, order_id: str, slot: str) -> bool:
        """Succeeded becomes refunded, with `payment:refunded`; True if this call changed it."""
        now = datetime.now(UTC)
        _, changed = await self._apply(ObjectId(order_id), lambda d: refunded_update(d, slot, now))
        if changed:
            self.payments.labels("refunded").inc()
        return changed

    async def _apply(
        self, oid: ObjectId, decide: Decision, read: Order | None = None
    ) -> tuple[Order | None, bool]:
        """One change decided on the order as read (`change_versioned`), with its events."""
        doc, changed = await self.outbox.change(
            oid, lambda d: decide(as_order(d)), field="rev", read=as_document(read)
        )
        return as_order(doc), changed

    async def _change(
        self,
        order_id: str,
        decide: Decision,
        read: Order | None = None,
        counted: str | None = None,
    ) -> Order:
        """The order after `decide`'s write; the payment outcome `counted` is counted once, by
        the call whose write recorded it (a repeat, a webhook or the reconciler finds it done)."""
        order, changed = await self._apply(ObjectId(order_id), decide, read=read)
        assert order is not None, "orders are never deleted"
        if changed and counted is not None:
            self.payments.labels(counted).inc()
        return order

    # --- what the reconciler repairs ----------------------------------------------------------

    async def pending_since(self, before: datetime, limit: int) -> list[Order]:
        """Orders with an attempt still pending since before `before`."""
        query = {"pendingAt": {"$gt": 0, "$lte": epoch_ms(before)}}
        return _orders(await self.collection.find(query).to_list(limit))

    async def refunds_due(self, before: datetime, limit: int) -> list[Order]:
        query = {"refundDueAt": {"$gt": 0, "$lte": epoch_ms(before)}}
        return _orders(await self.collection.find(query).to_list(limit))


def _orders(docs: list[Document]) -> list[Order]:
    return cast("list[Order]", docs)


def _moment(moment: datetime | None) -> int:
    return epoch_ms(_aware(moment)) if isinstance(moment, datetime) else now_ms()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class WebhookEvents:
    """Stripe events already handled, by event id: each is applied once."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db[WEBHOOK_EVENTS]

    async def first_time(self, event_id: str, kind: str) -> bool:
        try:
            await self.collection.insert_one(
                {"_id": event_id, "type": kind, "receivedAt": datetime.now(UTC)}
            )
        except DuplicateKeyError:
            return False
        return True

    async def forget(self, event_id: str) -> None:
        """Applying it failed: Stripe's next delivery applies it."""
        await self.collection.delete_one({"_id": event_id})


async def upgrade_storage(db: AsyncDatabase[Document]) -> int:
    """Payments stored in their own collection (one per order, `{orderId, stripeId}`, or
    attempts `{orderId, key, token, status, ...}`) move into their orders' documents; orders
    stored before get `rev` and `attempts`. Returns how many payments moved; a no-op once done."""
    orders = db[ORDERS]
    fresh = {"rev": 0, "attempts": {}, "tries": 0}
    await orders.update_many({"rev": {"$exists": False}}, {"$set": fresh})
    legacy = db[LEGACY_PAYMENTS]
    moved = 0
    async for old in legacy.find({}):
        order_id = str(old["orderId"])
        oid = object_id(order_id)
        if oid is None or await orders.find_one({"_id": oid}, {"_id": 1}) is None:
            log.warning("payment %s names no known order %s: left in place", old["_id"], order_id)
            continue
        token = str(old.get("token") or old.get("stripeId") or old["_id"])
        slot = attempt_slot(token)
        status = str(old.get("status") or PaymentStatus.SUCCEEDED)
        now = _moment(old.get("updatedAt") or old.get("createdAt"))
        attempt: Document = {
            "id": str(old["_id"]),
            "key": old.get("key") or attempt_key(order_id, token),
            "token": token,
            "status": status,
            "createdAt": _moment(old.get("createdAt")),
            "updatedAt": now,
            "heldUntil": _moment(old.get("heldUntil")),
            **{k: old[k] for k in ("stripeId", "failure") if k in old},
        }
        update: Update = {"$set": {f"attempts.{slot}": attempt}}
        if old.get("refundDue"):
            attempt.update(refundDue=True, refundReason=old.get("refundReason") or "due")
            update["$min"] = {"refundDueAt": now}
        if status == PaymentStatus.PENDING:
            update.setdefault("$min", {})["pendingAt"] = attempt["createdAt"]
        if "status" not in old or old.get("keptFor"):  # before attempts, every payment was kept
            update["$set"]["kept"] = slot
        update["$inc"] = {"rev": 1, "tries": 1}
        await orders.update_one({"_id": oid, f"attempts.{slot}": {"$exists": False}}, update)
        await legacy.delete_one({"_id": old["_id"]})
        moved += 1
    if moved:
        log.warning("moved %d payments into their orders", moved)
    return moved

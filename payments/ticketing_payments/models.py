"""Orders as payments sees them, each with its payments, and the rules that decide whether one
may be paid.

One document per order: the replica the orders service's events keep in step (`price`,
`status`, `userId`, `expiresAt`, `version`) and, under `attempts.<slot>`, every payment of the
order, one per card (`slot` names the payment method). A payment is an attempt first: recorded
`pending` before Stripe is called, then `failed` (a decline) or `succeeded`, and a succeeded
one may become `refunded`. `kept` names the one succeeded payment the order keeps. Because the
order and its payments share a document, one conditional write (`rev`, raised by every write,
the replica's included) decides a charge against the order's status and its other payments:
a charge lands either before a cancellation (which then sees it and refunds it) or after (and
sees the cancellation). Traces for the reconciler, indexed: `pendingAt` (epoch ms of the
oldest pending attempt) and `refundDueAt` (a refund was decided and is not done yet). An
attempt's moments are epoch ms too: nx-27017 stores a datetime `$set` at a nested path as text.

Every payment change carries the event it causes through the outbox: `payment:created` when
a payment is kept, `payment:refunded` when it is refunded.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
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
    PaymentCreated,
    PaymentRefunded,
)
from ticketing_common.moments import epoch_ms, now_ms
from ticketing_common.mongo import Document, Index, object_id
from ticketing_common.outbox import Outbox, OutboxRelay, add_events
from ticketing_common.replica import Applied, apply_next, event_object_id, insert_first
from ticketing_common.validation import required, rule, trimmed

log = logging.getLogger("ticketing.payments")

ORDERS = "orders"
WEBHOOK_EVENTS = "webhook_events"
# Where payments were stored before they moved into their orders (see `upgrade_storage`).
LEGACY_PAYMENTS = "payments"
CURRENCY = "usd"
# A card per attempt: an order's document holds at most this many.
MAX_ATTEMPTS = 20


class PaymentStatus(StrEnum):
    PENDING = "pending"  # recorded; Stripe's answer not known yet
    FAILED = "failed"  # Stripe refused it: nothing was charged
    SUCCEEDED = "succeeded"  # charged; kept (`kept`) or to be refunded (`refundDue`)
    REFUNDED = "refunded"  # charged and given back


INDEXES = {
    ORDERS: [Index([("pendingAt", 1)], sparse=True), Index([("refundDueAt", 1)], sparse=True)],
    # Stripe retries a delivery for up to three days; ids older than that need not be kept.
    WEBHOOK_EVENTS: [Index([("receivedAt", 1)], options={"expireAfterSeconds": 30 * 86400})],
}

# Stripe refuses idempotency keys over 255 characters; the key is `<orderId>:<token>`.
MAX_TOKEN_LENGTH = 200


def _not_empty(value: Any) -> str:
    text = trimmed(value)
    if not text:
        raise ValueError("empty")
    return text


def _token(value: Any) -> str:
    token = _not_empty(value)
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError("too long")
    return token


class NewPayment(BaseModel):
    token: Annotated[str, AfterValidator(_token), rule("Invalid value")] = required()
    orderId: Annotated[str, AfterValidator(_not_empty), rule("Invalid value")] = required()


class PaymentOut(BaseModel):
    id: str


def attempt_key(order_id: str, token: str) -> str:
    """Names one attempt: a repeat (retry, double click) replays it; a new card is a new one.
    It is also the attempt's Stripe idempotency key."""
    return f"{order_id}:{token}"


def attempt_slot(token: str) -> str:
    """Where an order's document keeps the attempt with this card (a field name any token
    makes safe: tokens may hold dots or dollars)."""
    return hashlib.sha256(token.encode()).hexdigest()[:24]


def amount_in_cents(price: float) -> int:
    """Stripe charges in the smallest unit; prices have at most 2 decimals."""
    return round(price * 100)


def attempts(order: Mapping[str, Any]) -> dict[str, Document]:
    found: dict[str, Document] = order.get("attempts") or {}
    return found


def is_cancelled(order: Mapping[str, Any] | None) -> bool:
    return order is not None and order.get("status") == OrderStatus.CANCELLED


def is_kept(order: Mapping[str, Any], slot: str) -> bool:
    return order.get("kept") == slot and not attempts(order)[slot].get("refundDue")


def check_payable(order: Document | None, user_id: str, now: datetime) -> Document:
    """The refusals of SPEC §3 payments, in its order; returns the order when it may be paid."""
    if order is None:
        raise NotFoundError()
    if order["userId"] != user_id:
        raise NotAuthorizedError()
    if is_cancelled(order):
        raise BadRequestError("Cannot pay for an cancelled order")
    if order.get("kept"):
        raise BadRequestError("Order has already been paid")
    if order["expiresAt"] <= now:
        raise BadRequestError("Order has expired")
    return order


def new_attempt(order_id: str, token: str, now: int, hold: timedelta) -> Document:
    return {
        "id": str(ObjectId()),
        "key": attempt_key(order_id, token),
        "token": token,
        "status": str(PaymentStatus.PENDING),
        "createdAt": now,
        "updatedAt": now,
        "heldUntil": now + _ms(hold),
    }


def _ms(span: timedelta) -> int:
    return int(span.total_seconds() * 1000)


# --- decisions: what one conditional write of an order does, given the order as read ----------


def _oldest(order: Mapping[str, Any], changed: str, field: str, test: Any) -> Document:
    """`$set`/`$unset` of a trace (`pendingAt`, `refundDueAt`): the oldest `updatedAt`/
    `createdAt` of the attempts `test` holds for, with `changed` no longer counted."""
    moments = [
        a["createdAt"] if field == "pendingAt" else a["updatedAt"]
        for slot, a in attempts(order).items()
        if slot != changed and test(a)
    ]
    return {"$set": {field: min(moments)}} if moments else {"$unset": {field: ""}}


def _merge(*updates: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for update in updates:
        for op, fields in update.items():
            merged.setdefault(op, {}).update(fields)
    return merged


def _is_pending(attempt: Mapping[str, Any]) -> bool:
    return bool(attempt["status"] == PaymentStatus.PENDING)


def _refund_due(attempt: Mapping[str, Any]) -> bool:
    return bool(attempt.get("refundDue"))


def start_update(
    order: Document | None, user_id: str, token: str, now: datetime, hold: timedelta
) -> dict[str, dict[str, Any]] | None:
    """Record a new attempt with this card, or take over its earlier attempt once the request
    that made it let go (`heldUntil`); None while that request still answers for it."""
    order = check_payable(order, user_id, now)
    slot = attempt_slot(token)
    at = f"attempts.{slot}"
    earlier = attempts(order).get(slot)
    if earlier is None:
        if order.get("tries", len(attempts(order))) >= MAX_ATTEMPTS:
            raise BadRequestError("Too many payment attempts for this order")
        attempt = new_attempt(str(order["_id"]), token, epoch_ms(now), hold)
        return {"$set": {at: attempt}, "$min": {"pendingAt": epoch_ms(now)}, "$inc": {"tries": 1}}
    if earlier["heldUntil"] > epoch_ms(now):
        return None
    return {"$set": {f"{at}.heldUntil": epoch_ms(now + hold)}}


def settle_update(
    order: Document | None, slot: str, stripe_id: str, now: datetime
) -> dict[str, dict[str, Any]] | None:
    """A charge Stripe confirmed: the attempt succeeds, kept for its order (with
    `payment:created`) or, when the order is cancelled or keeps another payment, due for a
    refund."""
    attempt = attempts(order or {}).get(slot)
    if order is None or attempt is None or attempt["status"] not in ("pending", "failed"):
        return None  # settled already (by a repeat, a webhook or the reconciler)
    at = f"attempts.{slot}"
    fields: dict[str, Any] = {
        f"{at}.status": str(PaymentStatus.SUCCEEDED),
        f"{at}.stripeId": stripe_id,
        f"{at}.updatedAt": epoch_ms(now),
    }
    update = _merge(
        {"$set": fields, "$unset": {f"{at}.failure": ""}},
        _oldest(order, slot, "pendingAt", _is_pending),
    )
    if is_cancelled(order) or order.get("kept"):
        reason = "the order is cancelled" if is_cancelled(order) else "another payment is kept"
        return _merge(update, _due(slot, reason, now))
    update["$set"]["kept"] = slot
    event = PaymentCreated(id=attempt["id"], orderId=str(order["_id"]), stripeId=stripe_id)
    return add_events(order, update, event)


def fail_update(
    order: Document | None, slot: str, stripe_id: str | None, message: str, now: datetime
) -> dict[str, dict[str, Any]] | None:
    """Stripe refused the attempt: nothing was charged."""
    attempt = attempts(order or {}).get(slot)
    if order is None or attempt is None or not _is_pending(attempt):
        return None
    at = f"attempts.{slot}"
    fields: dict[str, Any] = {
        f"{at}.status": str(PaymentStatus.FAILED),
        f"{at}.failure": message,
        f"{at}.updatedAt": epoch_ms(now),
    }
    if stripe_id:
        fields[f"{at}.stripeId"] = stripe_id
    return _merge({"$set": fields}, _oldest(order, slot, "pendingAt", _is_pending))


def _due(slot: str, reason: str, now: datetime) -> dict[str, dict[str, Any]]:
    at = f"attempts.{slot}"
    return {
        "$set": {
            f"{at}.refundDue": True,
            f"{at}.refundReason": reason,
            f"{at}.updatedAt": epoch_ms(now),
        },
        "$min": {"refundDueAt": epoch_ms(now)},
    }


def refund_due_update(
    order: Document | None, slot: str, reason: str, now: datetime
) -> dict[str, dict[str, Any]] | None:
    """Leave the trace of a refund before asking Stripe (a crash leaves it to the reconciler)."""
    attempt = attempts(order or {}).get(slot)
    if attempt is None or attempt["status"] != PaymentStatus.SUCCEEDED or _refund_due(attempt):
        return None
    return _due(slot, reason, now)


def refunded_update(
    order: Document | None, slot: str, now: datetime
) -> dict[str, dict[str, Any]] | None:
    """Stripe gave the charge back: the payment is no longer kept; `payment:refunded`."""
    attempt = attempts(order or {}).get(slot)
    if order is None or attempt is None or attempt["status"] != PaymentStatus.SUCCEEDED:
        return None
    at = f"attempts.{slot}"
    update = _merge(
        {
            "$set": {
                f"{at}.status": str(PaymentStatus.REFUNDED),
                f"{at}.refundedAt": epoch_ms(now),
                f"{at}.updatedAt": epoch_ms(now),
            },
            "$unset": {f"{at}.refundDue": ""},
        },
        _oldest(order, slot, "refundDueAt", _refund_due),
    )
    if order.get("kept") == slot:
        update["$unset"]["kept"] = ""
    event = PaymentRefunded(
        id=attempt["id"], orderId=str(order["_id"]), stripeId=attempt["stripeId"]
    )
    return add_events(order, update, event)


class OrderReplicas:
    """The orders collection: each order as its events made it, with its payments."""

    def __init__(self, db: AsyncDatabase[Document], relay: OutboxRelay | None = None) -> None:
        self.outbox = Outbox(db[ORDERS], relay)
        self.collection = self.outbox.collection

    async def get(self, order_id: str) -> Document | None:
        oid = object_id(order_id)
        if oid is None:
            return None
        doc: Document | None = await self.collection.find_one({"_id": oid})
        return doc

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
        return await insert_first(self.collection, doc)

    async def cancel(self, event: OrderCancelled) -> Applied:
        """Version N applies only on top of N-1; `rev` moves, so no charge decided on the
        order as it was lands after it."""
        update = {"$set": {"status": str(OrderStatus.CANCELLED)}, "$inc": {"rev": 1}}
        return await apply_next(self.collection, event_object_id(event.id), event.version, update)

    async def start(
        self, order_id: str, user_id: str, token: str, hold: timedelta
    ) -> tuple[Document, str, bool]:
        """Record the attempt with this card before Stripe is called, or find it when this is a
        repeat. Returns the order, the attempt's slot, and whether this request answers for
        the attempt: the one that recorded it, or a repeat once the one before let go.

        One write when the order may be paid and the card is new; a read first otherwise."""
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
        recorded: Document | None = await self.collection.find_one_and_update(
            payable,
            {
                "$set": {f"attempts.{slot}": attempt},
                "$min": {"pendingAt": epoch_ms(now)},
                "$inc": {"rev": 1, "tries": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        if recorded is not None:
            return recorded, slot, True
        order, mine = await self.outbox.change(
            oid, lambda d: start_update(d, user_id, token, now, hold), field="rev"
        )
        assert order is not None, "start_update refuses a missing order"
        return order, slot, mine

    async def let_go(self, order_id: str, slot: str) -> None:
        """The request answering for an attempt ends without an outcome: a repeat may take it."""
        await self.collection.update_one(
            {"_id": ObjectId(order_id)},
            {"$set": {f"attempts.{slot}.heldUntil": now_ms()}, "$inc": {"rev": 1}},
        )

    async def settle(
        self, order_id: str, slot: str, stripe_id: str, read: Document | None = None
    ) -> Document:
        """Record the charge: kept for the order if it may keep it, else due for a refund."""
        now = datetime.now(UTC)
        return await self._change(
            order_id, lambda d: settle_update(d, slot, stripe_id, now), read=read
        )

    async def fail(self, order_id: str, slot: str, stripe_id: str | None, message: str) -> Document:
        now = datetime.now(UTC)
        return await self._change(order_id, lambda d: fail_update(d, slot, stripe_id, message, now))

    async def mark_refund_due(self, order_id: str, slot: str, reason: str) -> Document | None:
        """The payment, due for a refund now; None when it is not a succeeded one."""
        now = datetime.now(UTC)
        doc = await self._change(order_id, lambda d: refund_due_update(d, slot, reason, now))
        attempt = attempts(doc)[slot]
        due = attempt["status"] == PaymentStatus.SUCCEEDED and _refund_due(attempt)
        return attempt if due else None

    async def refunded(self, order_id: str, slot: str) -> bool:
        """Succeeded becomes refunded, with `payment:refunded`; True if this call changed it."""
        now = datetime.now(UTC)
        _, changed = await self.outbox.change(
            ObjectId(order_id), lambda d: refunded_update(d, slot, now), field="rev"
        )
        return changed

    async def _change(self, order_id: str, decide: Any, read: Document | None = None) -> Document:
        doc, _ = await self.outbox.change(ObjectId(order_id), decide, field="rev", read=read)
        assert doc is not None, "orders are never deleted"
        return doc

    # --- what the reconciler repairs ----------------------------------------------------------

    async def pending_since(self, before: datetime, limit: int) -> list[Document]:
        """Orders with an attempt still pending since before `before`."""
        query = {"pendingAt": {"$gt": 0, "$lte": epoch_ms(before)}}
        return await self.collection.find(query).to_list(limit)

    async def refunds_due(self, before: datetime, limit: int) -> list[Document]:
        query = {"refundDueAt": {"$gt": 0, "$lte": epoch_ms(before)}}
        return await self.collection.find(query).to_list(limit)


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
        update: dict[str, dict[str, Any]] = {"$set": {f"attempts.{slot}": attempt}}
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

"""Orders as payments sees them, payments, and the rules that decide whether one may be paid.

A payment is an attempt first: recorded `pending` before Stripe is called, then `failed` (a
decline) or `succeeded`, and a succeeded one may become `refunded`. At most one succeeded
payment per order is *kept*: it carries `keptFor` = its order id, under a sparse unique index
(a partial index would not do: nx-27017 ignores partial filters). Traces a crash must not lose:
`refundDue` (a refund was decided), `orderCheckDue` (a kept payment whose order has not been
checked for a cancellation yet); each is indexed (sparse) for the reconciler. `heldUntil`
says how long the request that recorded an attempt answers for it (see `Payments.start`).

Every status change is one conditional write (`version`), through the outbox, carrying the
event it causes: `payment:created` when a payment is kept, `payment:refunded` when it is
refunded. So only the write that changes the status announces it.
"""

from __future__ import annotations

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
from ticketing_common.mongo import Document, Index, object_id
from ticketing_common.outbox import Outbox, OutboxRelay, add_events
from ticketing_common.replica import Applied, apply_next, event_object_id, insert_first
from ticketing_common.validation import required, rule, trimmed

log = logging.getLogger("ticketing.payments")

ORDERS = "orders"
PAYMENTS = "payments"
WEBHOOK_EVENTS = "webhook_events"
CURRENCY = "usd"


class PaymentStatus(StrEnum):
    PENDING = "pending"  # recorded; Stripe's answer not known yet
    FAILED = "failed"  # Stripe refused it: nothing was charged
    SUCCEEDED = "succeeded"  # charged; kept (`keptFor`) or to be refunded (`refundDue`)
    REFUNDED = "refunded"  # charged and given back


INDEXES = {
    PAYMENTS: [
        # One attempt per idempotency key: a repeated request finds its attempt. (Sparse:
        # payments stored before attempts have no key until `upgrade_storage` gives them one.)
        Index([("key", 1)], unique=True, sparse=True),
        # One kept charge per order: the index, not a look-up, settles concurrent attempts.
        Index([("keptFor", 1)], unique=True, sparse=True),
        Index([("orderId", 1), ("status", 1)]),
        Index([("stripeId", 1)], sparse=True),
        Index([("status", 1), ("createdAt", 1)]),
        Index([("refundDue", 1)], sparse=True),
        Index([("orderCheckDue", 1)], sparse=True),
    ],
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


def amount_in_cents(price: float) -> int:
    """Stripe charges in the smallest unit; prices have at most 2 decimals."""
    return round(price * 100)


def check_payable(order: Document | None, user_id: str, paid: bool, now: datetime) -> Document:
    """The refusals of SPEC §3 payments, in its order; returns the order when it may be paid."""
    if order is None:
        raise NotFoundError()
    if order["userId"] != user_id:
        raise NotAuthorizedError()
    if is_cancelled(order):
        raise BadRequestError("Cannot pay for an cancelled order")
    if paid:
        raise BadRequestError("Order has already been paid")
    if order["expiresAt"] <= now:
        raise BadRequestError("Order has expired")
    return order


def is_cancelled(order: Mapping[str, Any] | None) -> bool:
    return order is not None and order.get("status") == OrderStatus.CANCELLED


class OrderReplicas:
    """The orders collection: what payments needs of each order, kept in step by events."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db[ORDERS]

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
        }
        return await insert_first(self.collection, doc)

    async def cancel(self, event: OrderCancelled) -> Applied:
        """Version N applies only on top of N-1."""
        update = {"$set": {"status": str(OrderStatus.CANCELLED)}}
        return await apply_next(self.collection, event_object_id(event.id), event.version, update)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- decisions: what one conditional write of a payment does, given the payment as read -------


def settle_update(
    doc: Document | None, stripe_id: str, now: datetime, *, keep: bool
) -> dict[str, dict[str, Any]] | None:
    """A charge Stripe confirmed: the attempt succeeds, kept for its order (with
    `payment:created`) or, when another payment is kept already, due for a refund."""
    if doc is None or doc["status"] not in (PaymentStatus.PENDING, PaymentStatus.FAILED):
        return None  # settled already (by a repeat, a webhook or the reconciler)
    fields: dict[str, Any] = {
        "status": str(PaymentStatus.SUCCEEDED),
        "stripeId": stripe_id,
        "updatedAt": now,
    }
    unset = {"failure": ""}
    if not keep:
        due = {"refundDue": True, "refundReason": "another payment is kept for the order"}
        return {"$set": {**fields, **due}, "$unset": unset}
    fields.update(keptFor=doc["orderId"], orderCheckDue=True)
    event = PaymentCreated(id=str(doc["_id"]), orderId=doc["orderId"], stripeId=stripe_id)
    return add_events(doc, {"$set": fields, "$unset": unset}, event)


def fail_update(
    doc: Document | None, stripe_id: str | None, message: str, now: datetime
) -> dict[str, dict[str, Any]] | None:
    """Stripe refused the attempt: nothing was charged."""
    if doc is None or doc["status"] != PaymentStatus.PENDING:
        return None
    fields: dict[str, Any] = {"status": str(PaymentStatus.FAILED), "failure": message}
    if stripe_id:
        fields["stripeId"] = stripe_id
    return {"$set": {**fields, "updatedAt": now}}


def refunded_update(doc: Document | None, now: datetime) -> dict[str, dict[str, Any]] | None:
    """Stripe gave the charge back: the payment is no longer kept; `payment:refunded`."""
    if doc is None or doc["status"] != PaymentStatus.SUCCEEDED:
        return None
    event = PaymentRefunded(id=str(doc["_id"]), orderId=doc["orderId"], stripeId=doc["stripeId"])
    update: dict[str, dict[str, Any]] = {
        "$set": {"status": str(PaymentStatus.REFUNDED), "refundedAt": now, "updatedAt": now},
        "$unset": {"keptFor": "", "refundDue": "", "orderCheckDue": ""},
    }
    return add_events(doc, update, event)


class Payments:
    """The payments collection: attempts and payments, with their events (outbox)."""

    def __init__(self, db: AsyncDatabase[Document], relay: OutboxRelay | None) -> None:
        self.outbox = Outbox(db[PAYMENTS], relay)
        self.collection = self.outbox.collection

    # `orderId` is stored as the 24-hex string: nx-27017 finds no match for an ObjectId value
    # in any field but `_id`.

    async def kept_for(self, order_id: str) -> Document | None:
        """The payment an order keeps, if any."""
        doc: Document | None = await self.collection.find_one({"keptFor": order_id})
        return doc

    async def start(
        self, order_id: str, token: str, amount: int, hold: timedelta
    ) -> tuple[Document, bool]:
        """Record the attempt named by `<orderId>:<token>` before Stripe is called, or find it
        when this is a repeat. Returns it and whether this request answers for it: the one
        that recorded it, or a repeat once the request before it has let go (`heldUntil`)."""
        now = datetime.now(UTC)
        key = attempt_key(order_id, token)
        doc: Document = {
            "_id": ObjectId(),
            "orderId": order_id,
            "key": key,
            "token": token,
            "status": str(PaymentStatus.PENDING),
            "amount": amount,
            "currency": CURRENCY,
            "createdAt": now,
            "updatedAt": now,
            "heldUntil": now + hold,
            "version": 0,
        }
        try:
            await self.collection.insert_one(doc)
        except DuplicateKeyError:
            pass
        else:
            return doc, True
        taken: Document | None = await self.collection.find_one_and_update(
            {"key": key, "heldUntil": {"$lte": now}},
            {"$set": {"heldUntil": now + hold}},
            return_document=ReturnDocument.AFTER,
        )
        if taken is not None:
            return taken, True
        found: Document | None = await self.collection.find_one({"key": key})
        if found is None:  # it collided, yet is gone: nothing deletes attempts
            raise RuntimeError(f"attempt {key} collided but cannot be found")
        return found, False

    async def let_go(self, attempt: Document) -> None:
        """The request answering for `attempt` ends without an outcome: a repeat may take it."""
        await self.collection.update_one(
            {"_id": attempt["_id"]}, {"$set": {"heldUntil": datetime.now(UTC)}}
        )

    async def settle(self, attempt: Document, stripe_id: str) -> Document:
        """Record the charge: kept for the order if no other payment is, else due for a refund."""
        now = datetime.now(UTC)
        try:
            doc, _ = await self.outbox.change(
                attempt["_id"], lambda d: settle_update(d, stripe_id, now, keep=True)
            )
        except DuplicateKeyError:  # another payment is kept for this order
            doc, _ = await self.outbox.change(
                attempt["_id"], lambda d: settle_update(d, stripe_id, now, keep=False)
            )
        assert doc is not None, "attempts are never deleted"
        return doc

    async def fail(self, attempt: Document, stripe_id: str | None, message: str) -> Document:
        now = datetime.now(UTC)
        doc, _ = await self.outbox.change(
            attempt["_id"], lambda d: fail_update(d, stripe_id, message, now)
        )
        assert doc is not None, "attempts are never deleted"
        return doc

    async def mark_refund_due(self, payment: Document, reason: str) -> bool:
        """Leave the trace first (a crash then leaves it for the reconciler); False when the
        payment is not a succeeded one (refunded already)."""
        done = await self.collection.update_one(
            {"_id": payment["_id"], "status": str(PaymentStatus.SUCCEEDED)},
            {
                "$set": {"refundDue": True, "refundReason": reason, "updatedAt": datetime.now(UTC)},
                "$inc": {"version": 1},
            },
        )
        return done.matched_count > 0

    async def refunded(self, payment: Document) -> tuple[Document | None, bool]:
        """Succeeded becomes refunded, with `payment:refunded`; True if this call changed it."""
        now = datetime.now(UTC)
        return await self.outbox.change(payment["_id"], lambda d: refunded_update(d, now))

    async def order_checked(self, payment: Document) -> None:
        await self.collection.update_one({"_id": payment["_id"]}, {"$unset": {"orderCheckDue": ""}})

    # --- finding payments: for webhooks and the reconciler -----------------------------------

    async def by_key(self, key: str) -> Document | None:
        doc: Document | None = await self.collection.find_one({"key": key})
        return doc

    async def by_stripe_id(self, stripe_id: str) -> Document | None:
        doc: Document | None = await self.collection.find_one({"stripeId": stripe_id})
        return doc

    async def pending_for(self, order_id: str) -> list[Document]:
        query = {"orderId": order_id, "status": str(PaymentStatus.PENDING)}
        return await self.collection.find(query).to_list()

    async def stale_pending(self, before: datetime, now: datetime, limit: int) -> list[Document]:
        """Attempts still pending since before `before`, no longer held by their request."""
        query = {
            "status": str(PaymentStatus.PENDING),
            "createdAt": {"$lte": before},
            "heldUntil": {"$lte": now},
        }
        return await self.collection.find(query).sort("createdAt", 1).to_list(limit)

    async def refunds_due(self, before: datetime, limit: int) -> list[Document]:
        query = {"refundDue": True, "updatedAt": {"$lte": before}}
        return await self.collection.find(query).to_list(limit)

    async def order_checks_due(self, before: datetime, limit: int) -> list[Document]:
        query = {"orderCheckDue": True, "updatedAt": {"$lte": before}}
        return await self.collection.find(query).to_list(limit)


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
    """Payments stored before attempts were (`{orderId (unique), stripeId, amount, ...}`)
    become kept succeeded payments; the old unique index on `orderId` goes. Returns how many
    documents changed; a no-op once done."""
    collection = db[PAYMENTS]
    for name, info in (await collection.index_information()).items():
        if list(info.get("key", [])) == [("orderId", 1)] and info.get("unique"):
            await collection.drop_index(name)
            log.warning("dropped the unique index %s on payments.orderId", name)
    changed = 0
    async for doc in collection.find({"status": {"$exists": False}}):
        update = {
            "status": str(PaymentStatus.SUCCEEDED),
            "key": f"{doc['orderId']}:{doc.get('stripeId')}",
            "keptFor": doc["orderId"],
            "updatedAt": doc.get("createdAt") or datetime.now(UTC),
            "version": 0,
        }
        where = {"_id": doc["_id"], "status": {"$exists": False}}
        changed += (await collection.update_one(where, {"$set": update})).modified_count
    if changed:
        log.warning("upgraded %d payments to the attempt shape", changed)
    return changed

"""Orders as payments sees them, payments, and the rules that decide whether one may be paid."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from bson import ObjectId
from pydantic import AfterValidator, BaseModel
from pymongo.asynchronous.database import AsyncDatabase

from ticketing_common.errors import BadRequestError, NotAuthorizedError, NotFoundError
from ticketing_common.events import OrderCancelled, OrderCreated, OrderStatus, PaymentCreated
from ticketing_common.mongo import Document, Index, object_id
from ticketing_common.outbox import Outbox, OutboxRelay, with_events
from ticketing_common.replica import Applied, apply_next, event_object_id, insert_first
from ticketing_common.validation import required, rule, trimmed

ORDERS = "orders"
PAYMENTS = "payments"
CURRENCY = "usd"

INDEXES = {
    # One payment per order: the index, not a look-up, settles concurrent attempts.
    PAYMENTS: [Index([("orderId", 1)], unique=True)],
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


def amount_in_cents(price: float) -> int:
    """Stripe charges in the smallest unit; prices have at most 2 decimals."""
    return round(price * 100)


def check_payable(order: Document | None, user_id: str, paid: bool, now: datetime) -> Document:
    """The refusals of SPEC §3 payments, in its order; returns the order when it may be paid."""
    if order is None:
        raise NotFoundError()
    if order["userId"] != user_id:
        raise NotAuthorizedError()
    if order["status"] == OrderStatus.CANCELLED:
        raise BadRequestError("Cannot pay for an cancelled order")
    if paid:
        raise BadRequestError("Order has already been paid")
    if order["expiresAt"] <= now:
        raise BadRequestError("Order has expired")
    return order


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


class Payments:
    """The payments collection; each payment carries its `payment:created` event (outbox)."""

    def __init__(self, db: AsyncDatabase[Document], relay: OutboxRelay | None) -> None:
        self.outbox = Outbox(db[PAYMENTS], relay)
        self.collection = self.outbox.collection

    # `orderId` is stored as the 24-hex string: nx-27017 finds no match for an ObjectId value
    # in any field but `_id`.

    async def exists_for(self, order_id: str) -> bool:
        return await self.collection.count_documents({"orderId": order_id}, limit=1) > 0

    async def for_order(self, order_id: str) -> Document | None:
        doc: Document | None = await self.collection.find_one({"orderId": order_id})
        return doc

    async def add(self, order_id: str, stripe_id: str, amount: int) -> str:
        """Store the payment and its event in one write; DuplicateKeyError if already paid."""
        payment_id = ObjectId()
        event = PaymentCreated(id=str(payment_id), orderId=order_id, stripeId=stripe_id)
        doc = {
            "_id": payment_id,
            "orderId": order_id,
            "stripeId": stripe_id,
            "amount": amount,
            "currency": CURRENCY,
            "createdAt": datetime.now(UTC),
        }
        await self.outbox.insert(with_events(doc, event))
        return str(payment_id)

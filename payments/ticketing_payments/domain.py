"""Orders as payments sees them, each with its payments, and the rules that decide what one
conditional write of an order does. Pure: no I/O, no web framework; the storage is
`repository.py`'s, the taking of a payment to its end `settlement.py`'s.

One document per order (`Order`): the replica the orders service's events keep in step
(`price`, `status`, `userId`, `expiresAt`, `version`) and, under `attempts.<slot>`, every
payment of the order, one per card (`slot` names the payment method). A payment is an attempt
first (`Attempt`): recorded `pending` before Stripe is called, then `failed` (a decline) or
`succeeded`, and a succeeded one may become `refunded`. `kept` names the one succeeded payment
the order keeps. Because the order and its payments share a document, one conditional write
(`rev`, raised by every write, the replica's included) decides a charge against the order's
status and its other payments: a charge lands either before a cancellation (which then sees it
and refunds it) or after (and sees the cancellation). Traces for the reconciler, indexed:
`pendingAt` (epoch ms of the oldest pending attempt) and `refundDueAt` (a refund was decided
and is not done yet). An attempt's moments are epoch ms too: nx-27017 stores a datetime `$set`
at a nested path as text.

Every payment change carries the event it causes through the outbox: `payment:created` when
a payment is kept, `payment:refunded` when it is refunded (`events/publishers.py`).

Each decision takes the order as read and returns the `Update` to write conditionally on its
`rev`, None when there is nothing to do, or raises the domain error that refuses it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import Enum, StrEnum
from typing import Literal, NotRequired, TypedDict

from bson import ObjectId

from ticketing_common.errors import BadRequestError, NotAuthorizedError, NotFoundError
from ticketing_common.events import OrderStatus
from ticketing_common.moments import epoch_ms
from ticketing_common.mongo import Update, merge
from ticketing_common.outbox import add_events
from ticketing_payments.events.publishers import payment_created, payment_refunded

CURRENCY = "usd"
# A card per attempt: an order's document holds at most this many.
MAX_ATTEMPTS = 20
# Why a succeeded charge is not kept, but refunded.
CANCELLED_REASON = "the order is cancelled"
DUPLICATE_REASON = "another payment is kept"


class PaymentStatus(StrEnum):
    PENDING = "pending"  # recorded; Stripe's answer not known yet
    FAILED = "failed"  # Stripe refused it: nothing was charged
    SUCCEEDED = "succeeded"  # charged; kept (`kept`) or to be refunded (`refundDue`)
    REFUNDED = "refunded"  # charged and given back


class Attempt(TypedDict):
    """One payment of an order, under `attempts.<slot>` of its document; moments in epoch ms."""

    id: str  # the payment's id, in the API and the events
    key: str  # `attempt_key`: its Stripe idempotency key
    token: str  # the card (a Stripe payment method or token)
    status: str  # a PaymentStatus
    createdAt: int
    updatedAt: int
    heldUntil: int  # the request that answers for it does so until then
    stripeId: NotRequired[str]  # its PaymentIntent, once Stripe named it
    failure: NotRequired[str]  # why Stripe refused it (`failed`)
    refundDue: NotRequired[bool]  # a refund was decided and is not done yet
    refundReason: NotRequired[str]
    refundedAt: NotRequired[int]


class Order(TypedDict):
    """Payments' copy of an order, with its payments (one document)."""

    _id: ObjectId
    # The replica, as the orders service's events made it.
    price: float
    status: str  # an OrderStatus
    userId: str
    expiresAt: datetime
    version: int
    # Raised by every write: each write is conditional on it.
    rev: int
    attempts: dict[str, Attempt]
    tries: int  # attempts ever recorded (at most MAX_ATTEMPTS)
    kept: NotRequired[str]  # the slot of the one payment the order keeps
    pendingAt: NotRequired[int]  # the oldest pending attempt's `createdAt`
    refundDueAt: NotRequired[int]  # the oldest refund due's `updatedAt`
    # The outbox's (ticketing_common.outbox): events stored with a change, not yet published.
    outbox: NotRequired[dict[str, object]]
    outboxRev: NotRequired[int]
    outboxAt: NotRequired[int]


class Outcome(Enum):
    """What became of a charge Stripe made."""

    KEPT = "kept"  # the order's payment
    CANCELLED = "cancelled"  # the order is cancelled: refunded (or due)
    DUPLICATE = "duplicate"  # another payment is the order's: refunded (or due)


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


def attempts(order: Order) -> dict[str, Attempt]:
    return order.get("attempts") or {}


def is_cancelled(order: Order | None) -> bool:
    return order is not None and order.get("status") == OrderStatus.CANCELLED


def is_pending(attempt: Attempt) -> bool:
    return attempt["status"] == PaymentStatus.PENDING


def is_refund_due(attempt: Attempt) -> bool:
    return bool(attempt.get("refundDue"))


def is_kept(order: Order, slot: str) -> bool:
    return order.get("kept") == slot and not is_refund_due(attempts(order)[slot])


def outcome_of(order: Order, slot: str) -> Outcome:
    """What became of the settled attempt in `slot`, by the order as it now is."""
    if is_kept(order, slot):
        return Outcome.KEPT
    return Outcome.CANCELLED if is_cancelled(order) else Outcome.DUPLICATE


def check_payable(order: Order | None, user_id: str, now: datetime) -> Order:
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


def new_attempt(order_id: str, token: str, now: int, hold: timedelta) -> Attempt:
    """A pending attempt recorded at `now` (epoch ms), held by its request for `hold`."""
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

Trace = Literal["pendingAt", "refundDueAt"]


def _oldest(order: Order, changed: str, field: Trace, test: Callable[[Attempt], bool]) -> Update:
    """`$set`/`$unset` of a trace (`pendingAt`, `refundDueAt`): the oldest `createdAt`/
    `updatedAt` of the attempts `test` holds for, with `changed` no longer counted."""
    moments = [
        a["createdAt"] if field == "pendingAt" else a["updatedAt"]
        for slot, a in attempts(order).items()
        if slot != changed and test(a)
    ]
    return {"$set": {field: min(moments)}} if moments else {"$unset": {field: ""}}


def start_update(
    order: Order | None, user_id: str, token: str, now: datetime, hold: timedelta
) -> Update | None:
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


def settle_update(order: Order | None, slot: str, stripe_id: str, now: datetime) -> Update | None:
    """A charge Stripe confirmed: the attempt succeeds, kept for its order (with
    `payment:created`) or, when the order is cancelled or keeps another payment, due for a
    refund."""
    if order is None:
        return None
    attempt = attempts(order).get(slot)
    if attempt is None or attempt["status"] not in (PaymentStatus.PENDING, PaymentStatus.FAILED):
        return None  # settled already (by a repeat, a webhook or the reconciler)
    at = f"attempts.{slot}"
    update = merge(
        {
            "$set": {
                f"{at}.status": str(PaymentStatus.SUCCEEDED),
                f"{at}.stripeId": stripe_id,
                f"{at}.updatedAt": epoch_ms(now),
            },
            "$unset": {f"{at}.failure": ""},
        },
        _oldest(order, slot, "pendingAt", is_pending),
    )
    if is_cancelled(order) or order.get("kept"):
        reason = CANCELLED_REASON if is_cancelled(order) else DUPLICATE_REASON
        return merge(update, _due(slot, reason, now))
    update["$set"]["kept"] = slot
    return add_events(order, update, payment_created(order, attempt, stripe_id))


def fail_update(
    order: Order | None, slot: str, stripe_id: str | None, message: str, now: datetime
) -> Update | None:
    """Stripe refused the attempt: nothing was charged."""
    if order is None:
        return None
    attempt = attempts(order).get(slot)
    if attempt is None or not is_pending(attempt):
        return None
    at = f"attempts.{slot}"
    fields: dict[str, object] = {
        f"{at}.status": str(PaymentStatus.FAILED),
        f"{at}.failure": message,
        f"{at}.updatedAt": epoch_ms(now),
    }
    if stripe_id:
        fields[f"{at}.stripeId"] = stripe_id
    return merge({"$set": fields}, _oldest(order, slot, "pendingAt", is_pending))


def _due(slot: str, reason: str, now: datetime) -> Update:
    at = f"attempts.{slot}"
    return {
        "$set": {
            f"{at}.refundDue": True,
            f"{at}.refundReason": reason,
            f"{at}.updatedAt": epoch_ms(now),
        },
        "$min": {"refundDueAt": epoch_ms(now)},
    }


def refund_due_update(order: Order | None, slot: str, reason: str, now: datetime) -> Update | None:
    """Leave the trace of a refund before asking Stripe (a crash leaves it to the reconciler)."""
    attempt = attempts(order).get(slot) if order is not None else None
    if attempt is None or attempt["status"] != PaymentStatus.SUCCEEDED or is_refund_due(attempt):
        return None
    return _due(slot, reason, now)


def refunded_update(order: Order | None, slot: str, now: datetime) -> Update | None:
    """Stripe gave the charge back: the payment is no longer kept; `payment:refunded`."""
    if order is None:
        return None
    attempt = attempts(order).get(slot)
    if attempt is None or attempt["status"] != PaymentStatus.SUCCEEDED:
        return None
    at = f"attempts.{slot}"
    update = merge(
        {
            "$set": {
                f"{at}.status": str(PaymentStatus.REFUNDED),
                f"{at}.refundedAt": epoch_ms(now),
                f"{at}.updatedAt": epoch_ms(now),
            },
            "$unset": {f"{at}.refundDue": ""},
        },
        _oldest(order, slot, "refundDueAt", is_refund_due),
    )
    if order.get("kept") == slot:
        update["$unset"]["kept"] = ""
    return add_events(order, update, payment_refunded(order, attempt))


def refund_due(order: Order, slot: str) -> Attempt | None:
    """The attempt in `slot` when it is a succeeded payment due for a refund, else None."""
    attempt = attempts(order)[slot]
    due = attempt["status"] == PaymentStatus.SUCCEEDED and is_refund_due(attempt)
    return attempt if due else None


# --- what the reconciler repairs -----------------------------------------------------------------


def is_stale(attempt: Attempt, before: datetime, now: datetime) -> bool:
    """A pending attempt recorded before `before` that no request answers for any more: its
    Stripe call is to be repeated."""
    return (
        is_pending(attempt)
        and attempt["createdAt"] <= epoch_ms(before)
        and attempt["heldUntil"] <= epoch_ms(now)
    )


def is_refund_overdue(attempt: Attempt, before: datetime) -> bool:
    """A refund decided before `before` and still not done: it is to be asked again."""
    return is_refund_due(attempt) and attempt["updatedAt"] <= epoch_ms(before)


# --- what Stripe's webhooks report ---------------------------------------------------------------


def slot_of_intent(order: Order, stripe_id: str) -> str | None:
    """The slot of the attempt that stored this PaymentIntent, if one did."""
    found = [s for s, a in attempts(order).items() if a.get("stripeId") == stripe_id]
    return found[0] if found else None


def attempt_of_intent(
    order: Order, stripe_id: str, amount: object, methods: list[str]
) -> str | None:
    """The slot of the attempt a PaymentIntent of this order belongs to: by the intent's id
    once stored, else by its payment method, else the order's one pending attempt without an
    intent. None when it charges another amount than the order's."""
    if amount != amount_in_cents(order["price"]):
        return None
    by_intent = [s for s, a in attempts(order).items() if a.get("stripeId") == stripe_id]
    by_method = [attempt_slot(m) for m in methods]
    by_method = [s for s in by_method if s in attempts(order)]
    unnamed = [s for s, a in attempts(order).items() if is_pending(a) and not a.get("stripeId")]
    for found in (by_intent, by_method, unnamed if len(unnamed) == 1 else []):
        if found:
            return found[0]
    return None

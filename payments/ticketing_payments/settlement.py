"""Taking a payment to an end that matches its order, whichever path gets there first: the
request, a Stripe webhook, the `order:cancelled` listener or the reconciler. Each step is an
idempotent conditional write, so any of them may repeat or race another.

The cancellation race: settling writes the payment first and reads the order after; the
listener writes the order first and reads the payments after. So at least one of them sees the
other and refunds (both may: refunding is idempotent).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import Enum
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from ticketing_common.mongo import Document
from ticketing_common.outbox import OutboxRelay
from ticketing_payments.gateway import Refused, StripeGateway, Unavailable
from ticketing_payments.models import (
    OrderReplicas,
    Payments,
    PaymentStatus,
    attempt_key,
    is_cancelled,
)

log = logging.getLogger("ticketing.payments")

CANCELLED_REASON = "the order is cancelled"


class Outcome(Enum):
    KEPT = "kept"  # the order's payment
    CANCELLED = "cancelled"  # the order is cancelled: refunded (or due)
    DUPLICATE = "duplicate"  # another payment is the order's: refunded (or due)


def is_kept(payment: Mapping[str, Any]) -> bool:
    return (
        payment.get("status") == PaymentStatus.SUCCEEDED
        and payment.get("keptFor") == payment["orderId"]
        and not payment.get("refundDue")
    )


class Settlement:
    def __init__(
        self, db: AsyncDatabase[Document], relay: OutboxRelay | None, gateway: StripeGateway
    ) -> None:
        self.payments = Payments(db, relay)
        self.orders = OrderReplicas(db)
        self.gateway = gateway

    async def charge(self, attempt: Document) -> Outcome:
        """Make (or repeat: same key, same PaymentIntent) the attempt's Stripe call and settle
        it. Raises Refused once the attempt is marked failed, and Unavailable (still pending)."""
        try:
            charge = await self.gateway.charge(
                order_id=attempt["orderId"],
                amount=attempt["amount"],
                currency=attempt["currency"],
                token=attempt["token"],
                key=attempt["key"],
            )
        except Refused as refused:
            await self.payments.fail(attempt, refused.stripe_id, refused.error.message)
            raise
        return await self.settle(attempt, charge.stripe_id)

    async def settle(self, attempt: Document, stripe_id: str) -> Outcome:
        """Stripe charged the attempt: keep it for its order (`payment:created`), or refund it
        if its order is cancelled or already kept another payment."""
        payment = await self.payments.settle(attempt, stripe_id)
        if payment["status"] == PaymentStatus.SUCCEEDED and payment.get("keptFor"):
            return await self.check_order(payment)
        if payment.get("refundDue"):
            await self.refund(payment, payment.get("refundReason") or "not kept")
        order = await self.orders.get(payment["orderId"])
        return Outcome.CANCELLED if is_cancelled(order) else Outcome.DUPLICATE

    async def check_order(self, payment: Document) -> Outcome:
        """Read the order after the payment was kept: refund it if the order is cancelled."""
        order = await self.orders.get(payment["orderId"])
        if is_cancelled(order):
            await self.refund(payment, CANCELLED_REASON)
            return Outcome.CANCELLED
        if payment.get("orderCheckDue"):
            await self.payments.order_checked(payment)
        return Outcome.KEPT if is_kept(payment) else Outcome.DUPLICATE

    async def refund_kept(self, order_id: str) -> bool:
        """The order is cancelled: refund the payment it keeps, if any."""
        payment = await self.payments.kept_for(order_id)
        return payment is not None and await self.refund(payment, CANCELLED_REASON)

    async def refund(self, payment: Document, reason: str) -> bool:
        """Mark the refund due, have Stripe refund, then record it (`payment:refunded`).
        False when Stripe could not be reached: the mark stays for the reconciler."""
        if not await self.payments.mark_refund_due(payment, reason):
            return False  # not a succeeded payment: refunded already
        try:
            await self.gateway.refund(payment["stripeId"])
        except Unavailable:
            log.warning("refund of payment %s left to the reconciler", payment["_id"])
            return False
        _, changed = await self.payments.refunded(payment)
        if changed:
            log.warning(
                "refunded payment %s (%s) of order %s: %s",
                payment["_id"],
                payment["stripeId"],
                payment["orderId"],
                reason,
            )
        return True

    # --- what Stripe's webhooks report ------------------------------------------------------

    async def find_attempt(self, intent: Mapping[str, Any]) -> Document | None:
        """The attempt a PaymentIntent belongs to: by its id once stored, else by the attempt's
        key (the order id in the metadata, the payment method), else the order's one pending
        attempt of that amount."""
        stripe_id = str(intent.get("id") or "")
        if stripe_id and (found := await self.payments.by_stripe_id(stripe_id)):
            return found
        order_id = str((intent.get("metadata") or {}).get("orderId") or "")
        if not order_id:
            return None
        for method in _payment_methods(intent):
            if found := await self.payments.by_key(attempt_key(order_id, method)):
                return found
        candidates = [
            attempt
            for attempt in await self.payments.pending_for(order_id)
            if attempt["amount"] == intent.get("amount") and not attempt.get("stripeId")
        ]
        return candidates[0] if len(candidates) == 1 else None

    async def intent_succeeded(self, intent: Mapping[str, Any]) -> bool:
        attempt = await self.find_attempt(intent)
        if attempt is None:
            log.warning("payment_intent.succeeded for %s matches no attempt", intent.get("id"))
            return False
        await self.settle(attempt, str(intent["id"]))
        return True

    async def intent_failed(self, intent: Mapping[str, Any]) -> bool:
        attempt = await self.find_attempt(intent)
        if attempt is None:
            return False
        error = intent.get("last_payment_error") or {}
        message = str(error.get("message") or "Your card was declined.")
        await self.payments.fail(attempt, str(intent["id"]), message)
        return True

    async def charge_refunded(self, charge: Mapping[str, Any]) -> bool:
        """A refund made at Stripe (by us or from its dashboard) that gave the whole charge back."""
        if not charge.get("refunded"):
            return False  # a partial refund: the payment is still kept
        payment = await self.payments.by_stripe_id(str(charge.get("payment_intent") or ""))
        if payment is None:
            return False
        _, changed = await self.payments.refunded(payment)
        return changed


def _payment_methods(intent: Mapping[str, Any]) -> list[str]:
    """The payment method of an intent; a declined one names it only in its last error."""
    methods = [intent.get("payment_method")]
    error = intent.get("last_payment_error") or {}
    methods.append((error.get("payment_method") or {}).get("id"))
    return [m for m in methods if isinstance(m, str) and m]

"""Taking a payment to an end that matches its order, whichever path gets there first: the
request, a Stripe webhook, the `order:cancelled` listener or the reconciler. Each step is one
conditional write of the order's document (its payments live in it), so any of them may
repeat or race another, and a charge is always decided against the order as it is.

The service layer: what each step decides is `domain`'s, how it is stored `repository`'s, and
what Stripe does `gateway`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from ticketing_common.metrics import Metrics
from ticketing_common.mongo import Document
from ticketing_common.outbox import OutboxRelay
from ticketing_payments.domain import (
    CANCELLED_REASON,
    CURRENCY,
    Order,
    Outcome,
    amount_in_cents,
    attempt_of_intent,
    attempts,
    outcome_of,
    refund_due,
    slot_of_intent,
)
from ticketing_payments.gateway import Refused, StripeGateway, Unavailable
from ticketing_payments.repository import OrderReplicas, WebhookEvents

log = logging.getLogger("ticketing.payments")


class Settlement:
    def __init__(
        self,
        db: AsyncDatabase[Document],
        relay: OutboxRelay | None,
        gateway: StripeGateway,
        metrics: Metrics | None = None,
    ) -> None:
        self.orders = OrderReplicas(db, relay, metrics)
        self.webhook_events = WebhookEvents(db)
        self.gateway = gateway

    async def charge(self, order: Order, slot: str) -> Outcome:
        """Make (or repeat: same key, same PaymentIntent) the attempt's Stripe call and settle
        it. Raises Refused once the attempt is marked failed, and Unavailable (still pending)."""
        attempt = attempts(order)[slot]
        order_id = str(order["_id"])
        try:
            charge = await self.gateway.charge(
                order_id=order_id,
                amount=amount_in_cents(order["price"]),
                currency=CURRENCY,
                token=attempt["token"],
                key=attempt["key"],
            )
        except Refused as refused:
            await self.orders.fail(order_id, slot, refused.stripe_id, refused.error.message)
            raise
        return await self.settle(order_id, slot, charge.stripe_id, read=order)

    async def settle(
        self, order_id: str, slot: str, stripe_id: str, read: Order | None = None
    ) -> Outcome:
        """Stripe charged the attempt: keep it for its order (`payment:created`), or refund it
        if its order is cancelled or already keeps another payment."""
        order = await self.orders.settle(order_id, slot, stripe_id, read=read)
        due = refund_due(order, slot)
        if due is not None:
            await self.refund(order_id, slot, due.get("refundReason") or "not kept")
        return outcome_of(order, slot)

    async def refund_kept(self, order: Order) -> bool:
        """The order is cancelled: refund the payment it keeps, if any."""
        slot = order.get("kept")
        if not isinstance(slot, str):
            return False
        return await self.refund(str(order["_id"]), slot, CANCELLED_REASON)

    async def refund(self, order_id: str, slot: str, reason: str) -> bool:
        """Mark the refund due, have Stripe refund, then record it (`payment:refunded`).
        False when Stripe could not be reached: the mark stays for the reconciler."""
        payment = await self.orders.mark_refund_due(order_id, slot, reason)
        if payment is None:
            return False  # not a succeeded payment: refunded already
        try:
            await self.gateway.refund(payment["stripeId"])
        except Unavailable:
            log.warning("refund of payment %s left to the reconciler", payment["id"])
            return False
        if await self.orders.refunded(order_id, slot):
            log.warning(
                "refunded payment %s (%s) of order %s: %s",
                payment["id"],
                payment["stripeId"],
                order_id,
                payment.get("refundReason") or reason,
            )
        return True

    # --- what Stripe's webhooks report ------------------------------------------------------

    async def find_attempt(self, intent: Mapping[str, Any]) -> tuple[str, str] | None:
        """The order and slot of the attempt a PaymentIntent belongs to (its metadata names the
        order): by the intent's id once stored, else by its payment method, else the order's
        one pending attempt without an intent."""
        order_id = str((intent.get("metadata") or {}).get("orderId") or "")
        order = await self.orders.get(order_id) if order_id else None
        if order is None:
            return None
        stripe_id = str(intent.get("id") or "")
        slot = attempt_of_intent(order, stripe_id, intent.get("amount"), _payment_methods(intent))
        return (order_id, slot) if slot is not None else None

    async def intent_succeeded(self, intent: Mapping[str, Any]) -> bool:
        found = await self.find_attempt(intent)
        if found is None:
            log.warning("payment_intent.succeeded for %s matches no attempt", intent.get("id"))
            return False
        await self.settle(*found, str(intent["id"]))
        return True

    async def intent_failed(self, intent: Mapping[str, Any]) -> bool:
        found = await self.find_attempt(intent)
        if found is None:
            return False
        error = intent.get("last_payment_error") or {}
        message = str(error.get("message") or "Your card was declined.")
        await self.orders.fail(*found, str(intent["id"]), message)
        return True

    async def charge_refunded(self, charge: Mapping[str, Any]) -> bool:
        """A refund made at Stripe (by us or from its dashboard) that gave the whole charge back."""
        if not charge.get("refunded"):
            return False  # a partial refund: the payment is still kept
        stripe_id = str(charge.get("payment_intent") or "")
        order_id = str((charge.get("metadata") or {}).get("orderId") or "")
        if not order_id and stripe_id:  # a charge names its order only if Stripe copied it
            order_id = await self.gateway.order_of(stripe_id) or ""
        order = await self.orders.get(order_id) if order_id else None
        if order is None:
            return False
        slot = slot_of_intent(order, stripe_id)
        return await self.orders.refunded(order_id, slot) if slot is not None else False


def _payment_methods(intent: Mapping[str, Any]) -> list[str]:
    """The payment method of an intent; a declined one names it only in its last error."""
    methods = [intent.get("payment_method")]
    error = intent.get("last_payment_error") or {}
    methods.append((error.get("payment_method") or {}).get("id"))
    return [m for m in methods if isinstance(m, str) and m]

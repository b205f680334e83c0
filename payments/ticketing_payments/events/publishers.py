"""The events payments publishes (through its outbox), made from an order's document and one of
its payments: `payment:created` when the order keeps a payment, `payment:refunded` when a
payment is given back. Payload fields as SPEC §4 names them: `{id, orderId, stripeId}`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ticketing_common.events import PaymentCreated, PaymentRefunded

if TYPE_CHECKING:
    from ticketing_payments.domain import Attempt, Order


def payment_created(order: Order, attempt: Attempt, stripe_id: str) -> PaymentCreated:
    """The order keeps the payment `attempt`, charged as PaymentIntent `stripe_id`."""
    return PaymentCreated(id=attempt["id"], orderId=str(order["_id"]), stripeId=stripe_id)


def payment_refunded(order: Order, attempt: Attempt) -> PaymentRefunded:
    """The payment `attempt` (a charge, so it names its PaymentIntent) was given back."""
    return PaymentRefunded(
        id=attempt["id"], orderId=str(order["_id"]), stripeId=attempt["stripeId"]
    )

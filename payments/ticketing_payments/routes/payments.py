"""`/api/payments`: pay for an order."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, status

from ticketing_common.errors import BadRequestError, ServiceUnavailableError
from ticketing_common.service import context
from ticketing_common.sessions import RequiredUser
from ticketing_common.settings import get_settings
from ticketing_payments.domain import Outcome, attempts
from ticketing_payments.gateway import Refused, Unavailable
from ticketing_payments.schemas import NewPayment, PaymentOut
from ticketing_payments.settings import Settings
from ticketing_payments.settlement import Settlement

router = APIRouter(tags=["payments"])

# Beyond the Stripe call's own timeout, what a request needs to record its outcome.
HOLD_MARGIN_SECONDS = 5.0


SettlementDep = Annotated[Settlement, Depends(context(Settlement))]
SettingsDep = Annotated[Settings, Depends(get_settings)]


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_payment(
    body: NewPayment, user: RequiredUser, settlement: SettlementDep, settings: SettingsDep
) -> PaymentOut:
    """Record the attempt, charge it through Stripe, keep it for the order.

    A repeat of a request (same order, same card) goes on with the same attempt, so Stripe
    charges once; the request that recorded it answers 201, a concurrent repeat 400
    `Order has already been paid`. A charge that cannot be kept is refunded.
    """
    hold = timedelta(seconds=settings.stripe_timeout_seconds + HOLD_MARGIN_SECONDS)
    order, slot, mine = await settlement.orders.start(body.orderId, user.id, body.token, hold)
    try:
        outcome = await settlement.charge(order, slot)
    except Refused as refused:
        raise refused.error from None
    except Unavailable:
        if mine:  # a retry of this request may take the attempt over at once
            await settlement.orders.let_go(body.orderId, slot)
        raise ServiceUnavailableError() from None
    if outcome is Outcome.CANCELLED:
        raise BadRequestError("Cannot pay for an cancelled order")
    if outcome is Outcome.DUPLICATE or not mine:
        raise BadRequestError("Order has already been paid")
    return PaymentOut(id=attempts(order)[slot]["id"])

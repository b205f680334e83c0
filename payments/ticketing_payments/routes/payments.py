"""`/api/payments`: pay for an order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from ticketing_common.errors import BadRequestError, ServiceUnavailableError
from ticketing_common.runtime import Runtime
from ticketing_common.service import get_runtime
from ticketing_common.sessions import RequiredUser
from ticketing_payments.gateway import Refused, StripeGateway, Unavailable
from ticketing_payments.models import (
    NewPayment,
    OrderReplicas,
    PaymentOut,
    Payments,
    amount_in_cents,
    check_payable,
)
from ticketing_payments.settings import Settings
from ticketing_payments.settlement import Outcome, Settlement

router = APIRouter(tags=["payments"])

# Beyond the Stripe call's own timeout, what a request needs to record its outcome.
HOLD_MARGIN_SECONDS = 5.0


async def get_gateway(request: Request) -> StripeGateway:
    gateway: StripeGateway = request.app.state.gateway
    return gateway


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
GatewayDep = Annotated[StripeGateway, Depends(get_gateway)]


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_payment(
    body: NewPayment, user: RequiredUser, runtime: RuntimeDep, gateway: GatewayDep
) -> PaymentOut:
    """Record the attempt, charge it through Stripe, keep it for the order.

    A repeat of a request (same order, same card) goes on with the same attempt, so Stripe
    charges once; the request that recorded it answers 201, a concurrent repeat 400
    `Order has already been paid`. A charge that cannot be kept is refunded.
    """
    settings = runtime.settings
    assert isinstance(settings, Settings)
    settlement = Settlement(runtime.db, runtime.relay, gateway)
    payments: Payments = settlement.payments
    order = await OrderReplicas(runtime.db).get(body.orderId)
    paid = order is not None and await payments.kept_for(str(order["_id"])) is not None
    order = check_payable(order, user.id, paid, datetime.now(UTC))
    order_id = str(order["_id"])
    hold = timedelta(seconds=settings.stripe_timeout_seconds + HOLD_MARGIN_SECONDS)
    attempt, mine = await payments.start(
        order_id, body.token, amount_in_cents(order["price"]), hold
    )
    try:
        outcome = await settlement.charge(attempt)
    except Refused as refused:
        raise refused.error from None
    except Unavailable:
        if mine:  # a retry of this request may take the attempt over at once
            await payments.let_go(attempt)
        raise ServiceUnavailableError() from None
    if outcome is Outcome.CANCELLED:
        raise BadRequestError("Cannot pay for an cancelled order")
    if outcome is Outcome.DUPLICATE or not mine:
        raise BadRequestError("Order has already been paid")
    return PaymentOut(id=str(attempt["_id"]))

"""`/api/payments`: pay for an order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from pymongo.errors import DuplicateKeyError

from ticketing_common.errors import BadRequestError
from ticketing_common.runtime import Runtime
from ticketing_common.service import get_runtime
from ticketing_common.sessions import RequiredUser
from ticketing_payments.gateway import StripeGateway
from ticketing_payments.models import (
    CURRENCY,
    NewPayment,
    OrderReplicas,
    PaymentOut,
    Payments,
    amount_in_cents,
    check_payable,
)

router = APIRouter(tags=["payments"])


async def get_gateway(request: Request) -> StripeGateway:
    gateway: StripeGateway = request.app.state.gateway
    return gateway


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
GatewayDep = Annotated[StripeGateway, Depends(get_gateway)]


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_payment(
    body: NewPayment, user: RequiredUser, runtime: RuntimeDep, gateway: GatewayDep
) -> PaymentOut:
    payments = Payments(runtime.db, runtime.relay)
    order = await OrderReplicas(runtime.db).get(body.orderId)
    paid = order is not None and await payments.exists_for(str(order["_id"]))
    order = check_payable(order, user.id, paid, datetime.now(UTC))
    order_id = str(order["_id"])
    charge = await gateway.charge(
        order_id=order_id,
        amount=amount_in_cents(order["price"]),
        currency=CURRENCY,
        token=body.token,
    )
    try:
        payment_id = await payments.add(order_id, charge.stripe_id, charge.amount)
    except DuplicateKeyError:
        # A concurrent attempt paid first. With the same card it was the same charge (same
        # idempotency key); with another card, ours is a second charge: give it back.
        winner = await payments.for_order(order_id)
        if winner is None or winner["stripeId"] != charge.stripe_id:
            await gateway.refund(charge.stripe_id)
        raise BadRequestError("Order has already been paid") from None
    return PaymentOut(id=payment_id)

"""`/orders` (the visitor's orders) and `/orders/{id}` (countdown and payment)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response

from ticketing_client.api import Problem
from ticketing_client.error_pages import HtmlRoute
from ticketing_client.forms import FormDep, field, object_id
from ticketing_client.order_status import PAYABLE, seconds_left
from ticketing_client.views import page, redirect
from ticketing_client.visitor import Visitor, VisitorDep
from ticketing_common.errors import NotFoundError

router = APIRouter(route_class=HtmlRoute, include_in_schema=False)

# Stripe's test payment methods, offered as radio buttons when no publishable key is set.
TEST_CARDS = (
    ("pm_card_visa", "Visa (succeeds)"),
    ("pm_card_chargeDeclined", "Declined card"),
)


@router.get("/orders")
async def list_orders(visitor: VisitorDep) -> Response:
    if visitor.user is None:
        return redirect(visitor, "/auth/signin")
    reply = await visitor.api.orders(visitor.session)
    if reply.status == 401:
        return redirect(visitor, "/auth/signin")
    return page(visitor, "orders.html", orders=reply.require().items())


async def _order_page(
    visitor: Visitor,
    order_id: str,
    *,
    status: int = 200,
    problems: tuple[Problem, ...] = (),
    token: str = "pm_card_visa",
) -> Response:
    reply = await visitor.api.order(visitor.session, order_id)
    if reply.status == 401:
        # Someone else's order is, to this visitor, an unknown one.
        raise NotFoundError()
    order = reply.require().json()
    left = seconds_left(order.get("expiresAt"), datetime.now(UTC))
    payable = order.get("status") in PAYABLE and left > 0
    return page(
        visitor,
        "order_show.html",
        status=status,
        order=order,
        ticket=order.get("ticket") or {},
        seconds_left=left,
        expired=left <= 0,
        payable=payable,
        test_cards=TEST_CARDS,
        token=token,
        stripe_key=visitor.settings.stripe_publishable_key if payable else None,
        problems=list(problems),
    )


@router.get("/orders/{order_id}")
async def show_order(order_id: str, visitor: VisitorDep) -> Response:
    order_id = object_id(order_id)
    if visitor.user is None:
        return redirect(visitor, "/auth/signin")
    return await _order_page(visitor, order_id)


@router.post("/orders/{order_id}")
async def pay(order_id: str, visitor: VisitorDep, form: FormDep) -> Response:
    order_id = object_id(order_id)
    if visitor.user is None:
        return redirect(visitor, "/auth/signin")
    token = field(form, "token").strip()
    reply = await visitor.api.pay(visitor.session, order_id, token)
    if reply.status == 401:
        # Signed out meanwhile (or not the buyer): the order page sorts out which.
        return redirect(visitor, f"/orders/{order_id}")
    if reply.ok:
        return redirect(visitor, "/orders")
    return await _order_page(
        visitor,
        order_id,
        status=reply.status if reply.status >= 400 else 502,
        problems=reply.problems,
        token=token if token in dict(TEST_CARDS) else "pm_card_visa",
    )

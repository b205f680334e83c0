"""`/api/orders`: reserve a ticket, list and show one's orders, cancel one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from ticketing_common.mongo import require_object_id
from ticketing_common.service import context_of
from ticketing_common.sessions import RequiredUser
from ticketing_common.settings import get_settings
from ticketing_orders.models import NewOrder, OrderOut, Orders, Storage, cancel_by_user
from ticketing_orders.settings import Settings

router = APIRouter(tags=["orders"])


async def get_orders(request: Request) -> Orders:
    return context_of(request, Storage).orders


OrdersDep = Annotated[Orders, Depends(get_orders)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_order(
    user: RequiredUser,
    body: NewOrder,
    orders: OrdersDep,
    settings: SettingsDep,
) -> OrderOut:
    return await orders.create(user.id, body.ticket_oid, settings.expiration_window_seconds)


@router.get("")
async def list_orders(user: RequiredUser, orders: OrdersDep) -> list[OrderOut]:
    return await orders.of_user(user.id)


@router.get("/{order_id}")
async def show_order(order_id: str, user: RequiredUser, orders: OrdersDep) -> OrderOut:
    order = await orders.owned(require_object_id(order_id), user.id)
    (shown,) = await orders.with_tickets([order])
    return shown


@router.delete("/{order_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def cancel_order(order_id: str, user: RequiredUser, orders: OrdersDep) -> Response:
    order = await orders.owned(require_object_id(order_id), user.id)
    await orders.transition(order, cancel_by_user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

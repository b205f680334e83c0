"""`/api/orders`: reserve a ticket, list and show one's orders, cancel one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from ticketing_common.mongo import require_object_id
from ticketing_common.service import context
from ticketing_common.sessions import RequiredUser
from ticketing_common.settings import get_settings
from ticketing_orders.domain import cancel_by_user, new_order, orderable, owned
from ticketing_orders.repository import Storage
from ticketing_orders.schemas import NewOrder, OrderOut
from ticketing_orders.settings import Settings

router = APIRouter(tags=["orders"])


StorageDep = Annotated[Storage, Depends(context(Storage))]
SettingsDep = Annotated[Settings, Depends(get_settings)]


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_order(
    user: RequiredUser,
    body: NewOrder,
    storage: StorageDep,
    settings: SettingsDep,
) -> OrderOut:
    ticket = orderable(await storage.tickets.get(body.ticket_oid))
    order = new_order(user.id, ticket, datetime.now(UTC), settings.expiration_window_seconds)
    await storage.orders.insert(order)
    return OrderOut.of(order, ticket)


@router.get("")
async def list_orders(user: RequiredUser, storage: StorageDep) -> list[OrderOut]:
    orders = await storage.orders.of_user(user.id)
    tickets = await storage.tickets.by_id(order["ticketId"] for order in orders)
    return [OrderOut.of(order, tickets.get(order["ticketId"])) for order in orders]


@router.get("/{order_id}")
async def show_order(order_id: str, user: RequiredUser, storage: StorageDep) -> OrderOut:
    order = owned(await storage.orders.get(require_object_id(order_id)), user.id)
    return OrderOut.of(order, await storage.tickets.get(order["ticketId"]))


@router.delete("/{order_id}", status_code=status.HTTP_204_NO_CONTENT)
async def cancel_order(order_id: str, user: RequiredUser, storage: StorageDep) -> Response:
    """204 whether this call cancelled the order or it already was cancelled."""
    order = owned(await storage.orders.get(require_object_id(order_id)), user.id)

    await storage.orders.transition(order, lambda current: cancel_by_user(current, user.id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)

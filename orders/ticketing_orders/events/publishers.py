"""The events the orders service emits, made from the order they are about."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ticketing_common.events import (
    OrderCancelled,
    OrderCreated,
    OrderStatus,
    PricedTicketRef,
    TicketRef,
)

if TYPE_CHECKING:
    from ticketing_orders.domain import OrderDoc


def order_created(order: OrderDoc) -> OrderCreated:
    """The `order:created` of an order just placed: its ticket at the price the buyer pays."""
    return OrderCreated(
        id=str(order["_id"]),
        version=order["version"],
        status=OrderStatus(order["status"]),
        userId=order["userId"],
        expiresAt=order["expiresAt"],
        ticket=PricedTicketRef(id=str(order["ticketId"]), price=order["price"]),
    )


def order_cancelled(order: OrderDoc) -> OrderCancelled:
    """The `order:cancelled` of the cancellation about to be written to `order` (as read): it
    names the version that write makes."""
    return OrderCancelled(
        id=str(order["_id"]),
        version=order["version"] + 1,
        ticket=TicketRef(id=str(order["ticketId"])),
    )

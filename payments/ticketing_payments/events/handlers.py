"""How the payments service applies the orders service's events."""

from __future__ import annotations

from ticketing_common.events import OrderCancelled, OrderCreated
from ticketing_common.handlers import Handlers, handlers, on
from ticketing_common.listener import Retry
from ticketing_common.replica import Applied
from ticketing_payments.domain import is_cancelled
from ticketing_payments.settlement import Settlement


async def replicate_order(event: OrderCreated, settlement: Settlement) -> None:
    """Start the replica of a new order; a repeat finds it there and is ignored."""
    await settlement.orders.insert(event)


async def cancel_order(event: OrderCancelled, settlement: Settlement) -> None:
    """Mark the order cancelled, strictly in version order (wait, by redelivery, across a gap);
    then refund the payment the order keeps, if any. A repeat (say, after a crash between the
    two) finds the order cancelled already and still refunds."""
    if await settlement.orders.cancel(event) is Applied.GAP:
        raise Retry(f"order {event.id} version {event.version - 1} has not arrived yet")
    order = await settlement.orders.get(event.id)
    if order is not None and is_cancelled(order):
        # A refund Stripe does not take now stays due: the reconciler finishes it.
        await settlement.refund_kept(order)


HANDLERS: Handlers[Settlement] = handlers(
    on(OrderCreated, replicate_order),
    on(OrderCancelled, cancel_order),
)

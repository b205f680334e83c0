"""How the orders service applies other services' events: one function per event type, given
the service's storage."""

from __future__ import annotations

import logging

from ticketing_common.events import (
    ExpirationComplete,
    OrderStatus,
    PaymentCreated,
    PaymentRefunded,
    TicketCreated,
    TicketUpdated,
)
from ticketing_common.handlers import Handlers, handlers, on
from ticketing_common.listener import Retry
from ticketing_common.mongo import object_id
from ticketing_common.replica import Applied, event_object_id
from ticketing_orders.domain import OrderDoc, expire
from ticketing_orders.repository import Orders, Storage

log = logging.getLogger("ticketing.orders.handlers")
CANCELLED = OrderStatus.CANCELLED


async def replicate_ticket(event: TicketCreated, storage: Storage) -> None:
    """Start the replica of a new ticket; a repeat finds it there and is ignored."""
    await storage.tickets.insert(event)


async def update_ticket(event: TicketUpdated, storage: Storage) -> None:
    """Apply ticket changes strictly in version order; wait (redelivery) across a gap."""
    if await storage.tickets.update(event) is Applied.GAP:
        raise Retry(f"ticket {event.id} version {event.version - 1} has not arrived yet")


async def _order(orders: Orders, order_id: str) -> OrderDoc:
    """The event's order; one we never made is an error (retried, then a dead letter)."""
    oid = object_id(order_id)
    order = await orders.get(oid) if oid is not None else None
    if order is None:
        raise LookupError(f"order {order_id} not found")
    return order


async def expire_order(event: ExpirationComplete, storage: Storage) -> None:
    """Cancel an order nobody paid for in time; a paid or cancelled one stays as it is."""
    order = await _order(storage.orders, event.orderId)
    await storage.orders.transition(order, expire)


async def complete_order(event: PaymentCreated, storage: Storage) -> None:
    """Mark the order paid; a repeat finds it complete, a cancelled order stays cancelled."""
    if await storage.orders.complete(event_object_id(event.orderId)) is not None:
        return
    if (await _order(storage.orders, event.orderId))["status"] == CANCELLED:
        log.warning("order %s paid after it was cancelled: payments refunds it", event.orderId)


async def record_refund(event: PaymentRefunded, storage: Storage) -> None:
    """Record on the order that its payment was given back; the status stays as it is."""
    await storage.orders.record_refund((await _order(storage.orders, event.orderId))["_id"])


HANDLERS: Handlers[Storage] = handlers(
    on(TicketCreated, replicate_ticket),
    on(TicketUpdated, update_ticket),
    on(ExpirationComplete, expire_order),
    on(PaymentCreated, complete_order),
    on(PaymentRefunded, record_refund),
)

"""What the orders service does with other services' events."""

from __future__ import annotations

import logging

from pymongo.errors import DuplicateKeyError

from ticketing_common.events import ExpirationComplete, PaymentCreated, TicketCreated, TicketUpdated
from ticketing_common.listener import Listener, Retry
from ticketing_common.mongo import Document, object_id
from ticketing_common.replica import Applied
from ticketing_common.service import ListenerFactory
from ticketing_orders.models import Orders, TicketReplica, complete, expire

log = logging.getLogger("ticketing.orders.listeners")


class TicketCreatedListener(Listener[TicketCreated]):
    """Start the replica of a new ticket; a repeat finds it there and is ignored."""

    event_type = TicketCreated

    async def handle(self, event: TicketCreated) -> None:
        await TicketReplica(self.runtime.db).insert(event)


class TicketUpdatedListener(Listener[TicketUpdated]):
    """Apply ticket changes strictly in version order; wait (redelivery) across a gap."""

    event_type = TicketUpdated

    async def handle(self, event: TicketUpdated) -> None:
        if await TicketReplica(self.runtime.db).update(event) is Applied.GAP:
            raise Retry(f"ticket {event.id} version {event.version - 1} has not arrived yet")


async def _order(orders: Orders, order_id: str) -> Document:
    """The event's order; one we never made is an error (retried, then a dead letter)."""
    oid = object_id(order_id)
    order = await orders.get(oid) if oid is not None else None
    if order is None:
        raise LookupError(f"order {order_id} not found")
    return order


class ExpirationCompleteListener(Listener[ExpirationComplete]):
    """Cancel an order nobody paid for in time; a paid or cancelled one stays as it is."""

    event_type = ExpirationComplete

    async def handle(self, event: ExpirationComplete) -> None:
        orders = Orders(self.runtime.db, self.runtime.relay)
        order = await _order(orders, event.orderId)
        await orders.transition(order, expire)


class PaymentCreatedListener(Listener[PaymentCreated]):
    """Mark the order paid; a repeat finds it complete and changes nothing."""

    event_type = PaymentCreated

    async def handle(self, event: PaymentCreated) -> None:
        orders = Orders(self.runtime.db, self.runtime.relay)
        order = await _order(orders, event.orderId)
        try:
            await orders.transition(order, complete(hold_ticket=True))
        except DuplicateKeyError:
            # Paid after it had been cancelled and another order took the ticket: the payment
            # still happened, so record it, and leave the ticket to the other order.
            log.error("order %s paid after its ticket went to another order", event.orderId)
            await orders.transition(
                await _order(orders, event.orderId), complete(hold_ticket=False)
            )


LISTENERS: list[ListenerFactory] = [
    TicketCreatedListener,
    TicketUpdatedListener,
    ExpirationCompleteListener,
    PaymentCreatedListener,
]

"""What the tickets service does with the orders service's events."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ticketing_common.errors import Contention
from ticketing_common.events import OrderCancelled, OrderCreated
from ticketing_common.listener import Listener, Retry
from ticketing_common.mongo import Document, object_id
from ticketing_common.service import ListenerFactory
from ticketing_tickets.models import Tickets, Update, release, reserve

log = logging.getLogger("ticketing.tickets.listeners")


class TicketNotFound(LookupError):
    """Orders only ever reserve tickets that exist here: an error, retried, then a dead letter."""


async def _apply(
    listener: Listener[OrderCreated] | Listener[OrderCancelled],
    ticket_id: str,
    decide: Callable[[Document], Update | None],
) -> Document:
    oid = object_id(ticket_id)
    if oid is None:
        raise TicketNotFound(f"Ticket not found: {ticket_id}")

    def decide_found(doc: Document | None) -> Update | None:
        if doc is None:
            raise TicketNotFound(f"Ticket not found: {ticket_id}")
        return decide(doc)

    try:
        doc, _ = await Tickets(listener.runtime.db, listener.runtime.relay).change(
            oid, decide_found
        )
    except Contention as exc:
        raise Retry(str(exc)) from None
    assert doc is not None
    return doc


class OrderCreatedListener(Listener[OrderCreated]):
    """Reserve the ticket for the new order; a repeat finds it reserved and changes nothing."""

    event_type = OrderCreated

    def key(self, event: OrderCreated) -> str:
        return event.ticket.id

    async def handle(self, event: OrderCreated) -> None:
        def decide(doc: Document) -> Update | None:
            holder = doc.get("orderId")
            if holder and holder != event.id and event.id not in doc.get("releasedOrders", {}):
                # Orders lets one live order hold a ticket, so the holder's cancellation is on
                # its way (another consumer): wait for it rather than drop this order.
                raise Retry(f"ticket {event.ticket.id} is held by {holder}: wait for its release")
            return reserve(doc, event.id)

        doc = await _apply(self, event.ticket.id, decide)
        if doc.get("orderId") != event.id:
            log.warning("order %s was cancelled before its reservation: not applied", event.id)


class OrderCancelledListener(Listener[OrderCancelled]):
    """Free the ticket if the cancelled order is the one holding it."""

    event_type = OrderCancelled

    def key(self, event: OrderCancelled) -> str:
        return event.ticket.id

    async def handle(self, event: OrderCancelled) -> None:
        await _apply(self, event.ticket.id, lambda doc: release(doc, event.id))


LISTENERS: list[ListenerFactory] = [OrderCreatedListener, OrderCancelledListener]

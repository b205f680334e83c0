"""How the tickets service applies the orders service's events."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ticketing_common.errors import Contention
from ticketing_common.events import OrderCancelled, OrderCreated
from ticketing_common.handlers import Handlers, handlers, on
from ticketing_common.listener import Retry
from ticketing_common.mongo import Document, object_id
from ticketing_tickets.models import Tickets, Update, release, reserve

log = logging.getLogger("ticketing.tickets.handlers")


class TicketNotFound(LookupError):
    """Orders only ever reserve tickets that exist here: an error, retried, then a dead letter."""


async def _apply(
    tickets: Tickets, ticket_id: str, decide: Callable[[Document], Update | None]
) -> Document:
    oid = object_id(ticket_id)
    if oid is None:
        raise TicketNotFound(f"Ticket not found: {ticket_id}")

    def decide_found(doc: Document | None) -> Update | None:
        if doc is None:
            raise TicketNotFound(f"Ticket not found: {ticket_id}")
        return decide(doc)

    try:
        doc, _ = await tickets.change(oid, decide_found)
    except Contention as exc:
        raise Retry(str(exc)) from None
    assert doc is not None
    return doc


async def reserve_ticket(event: OrderCreated, tickets: Tickets) -> None:
    """Reserve the ticket for the new order; a repeat finds it reserved and changes nothing."""

    def decide(doc: Document) -> Update | None:
        holder = doc.get("orderId")
        if holder and holder != event.id and event.id not in doc.get("releasedOrders", {}):
            # Orders lets one live order hold a ticket, so the holder's cancellation is on its
            # way (another consumer): wait for it rather than drop this order.
            raise Retry(f"ticket {event.ticket.id} is held by {holder}: wait for its release")
        return reserve(doc, event.id)

    doc = await _apply(tickets, event.ticket.id, decide)
    if doc.get("orderId") != event.id:
        log.warning("order %s was cancelled before its reservation: not applied", event.id)


async def release_ticket(event: OrderCancelled, tickets: Tickets) -> None:
    """Free the ticket if the cancelled order is the one holding it."""
    await _apply(tickets, event.ticket.id, lambda doc: release(doc, event.id))


def _ticket_of(event: OrderCreated | OrderCancelled) -> str:
    return event.ticket.id


HANDLERS: Handlers[Tickets] = handlers(
    on(OrderCreated, reserve_ticket, key=_ticket_of),
    on(OrderCancelled, release_ticket, key=_ticket_of),
)

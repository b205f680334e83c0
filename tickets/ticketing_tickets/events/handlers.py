"""How the tickets service applies the orders service's events."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ticketing_common.errors import Contention
from ticketing_common.events import OrderCancelled, OrderCreated
from ticketing_common.handlers import Handlers, handlers, on
from ticketing_common.listener import Retry
from ticketing_common.mongo import Update, object_id
from ticketing_tickets.domain import TicketDoc, held_by_another, release, reserve
from ticketing_tickets.repository import Tickets

log = logging.getLogger("ticketing.tickets.handlers")


class TicketNotFound(LookupError):
    """Orders only ever reserve tickets that exist here: an error, retried, then a dead letter."""


async def _apply(
    tickets: Tickets, ticket_id: str, decide: Callable[[TicketDoc], Update | None]
) -> TicketDoc:
    oid = object_id(ticket_id)
    if oid is None:
        raise TicketNotFound(f"Ticket not found: {ticket_id}")

    def decide_found(ticket: TicketDoc | None) -> Update | None:
        if ticket is None:
            raise TicketNotFound(f"Ticket not found: {ticket_id}")
        return decide(ticket)

    try:
        ticket, _ = await tickets.change(oid, decide_found)
    except Contention as exc:
        raise Retry(str(exc)) from None
    assert ticket is not None
    return ticket


async def reserve_ticket(event: OrderCreated, tickets: Tickets) -> None:
    """Reserve the ticket for the new order; a repeat finds it reserved and changes nothing."""

    def decide(ticket: TicketDoc) -> Update | None:
        holder = held_by_another(ticket, event.id)
        if holder:
            # Its cancellation is on its way (another consumer): wait for it rather than drop
            # this order.
            raise Retry(f"ticket {event.ticket.id} is held by {holder}: wait for its release")
        return reserve(ticket, event.id)

    ticket = await _apply(tickets, event.ticket.id, decide)
    if ticket.get("orderId") != event.id:
        log.warning("order %s was cancelled before its reservation: not applied", event.id)


async def release_ticket(event: OrderCancelled, tickets: Tickets) -> None:
    """Free the ticket if the cancelled order is the one holding it."""
    await _apply(tickets, event.ticket.id, lambda ticket: release(ticket, event.id))


def _ticket_of(event: OrderCreated | OrderCancelled) -> str:
    return event.ticket.id


HANDLERS: Handlers[Tickets] = handlers(
    on(OrderCreated, reserve_ticket, key=_ticket_of),
    on(OrderCancelled, release_ticket, key=_ticket_of),
)

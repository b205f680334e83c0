"""The events the tickets service emits, made from the ticket they are about."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ticketing_common.events import TicketCreated, TicketUpdated

if TYPE_CHECKING:
    from ticketing_tickets.domain import TicketDoc


def ticket_created(ticket: TicketDoc) -> TicketCreated:
    """The `ticket:created` of a ticket just put up for sale."""
    return TicketCreated(
        id=str(ticket["_id"]),
        version=ticket["version"],
        title=ticket["title"],
        price=ticket["price"],
        userId=ticket["userId"],
    )


def ticket_updated(
    ticket: TicketDoc,
    *,
    order_id: str | None,
    title: str | None = None,
    price: float | None = None,
) -> TicketUpdated:
    """The `ticket:updated` of the change about to be written to `ticket` (as read): the next
    version, with the title and price given (else as they are) and `order_id` the order that
    holds the ticket after the change (None: free, and no `orderId` in the payload)."""
    return TicketUpdated(
        id=str(ticket["_id"]),
        version=ticket["version"] + 1,
        title=ticket["title"] if title is None else title,
        price=ticket["price"] if price is None else price,
        userId=ticket["userId"],
        orderId=order_id,
    )

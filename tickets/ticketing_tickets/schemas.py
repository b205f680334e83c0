"""The tickets API's bodies: what a request may carry (and the SPEC's message for each broken
rule), the query rules, and the ticket as answered."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from ticketing_common.validation import Money, required, rule, trimmed
from ticketing_tickets.domain import TicketDoc

TITLE_MAX_LENGTH = 200


def _title(value: Any) -> str:
    title = trimmed(value)
    if not title or len(title) > TITLE_MAX_LENGTH:
        raise ValueError("blank or too long")
    return title


Title = Annotated[str, AfterValidator(_title), rule("Title is required")]


class NewTicket(BaseModel):
    title: Title = required()
    price: Annotated[Money, rule("Price must be greater than 0")] = required()


class TicketEdit(BaseModel):
    title: Title = required()
    price: Annotated[Money, rule("Price must be provided and must be greater than 0")] = required()


def _between(low: int, high: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value < low or value > high:
            raise ValueError("out of range")
        return value

    return check


LIMIT_MAX = 100
# MongoDB's skip is a signed 64-bit integer: a larger offset would overflow in the database
# (a 500), so it is refused like a negative one, with the same message.
OFFSET_MAX = 2**63 - 1

Limit = Annotated[
    int, AfterValidator(_between(1, LIMIT_MAX)), rule("Limit must be between 1 and 100")
]
Offset = Annotated[int, AfterValidator(_between(0, OFFSET_MAX)), rule("Offset must be 0 or more")]


class TicketOut(BaseModel):
    """The SPEC's ticket; internals (`rev`, `releasedOrders`, the outbox) never leave the
    service. Routes answer it with `response_model_exclude_none=True`, so `orderId` is absent,
    not null, while the ticket is free."""

    id: str
    title: str
    price: float
    userId: str
    version: int
    orderId: str | None = Field(
        default=None, description="Present only while an order holds the ticket."
    )

    @classmethod
    def of(cls, ticket: TicketDoc) -> TicketOut:
        """The stored ticket's public fields (the rest is ignored)."""
        return cls.model_validate(
            {**ticket, "id": str(ticket["_id"]), "orderId": ticket.get("orderId") or None}
        )

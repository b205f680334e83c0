"""The tickets API's bodies: what a request may carry (and the SPEC's message for each broken
rule), the query rules, and the ticket as answered."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Annotated, Any

from bson import ObjectId
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
# A skip walks every skipped entry of the index, so deep pages are read with the `after` cursor;
# the offset stays for shallow jumps, bounded so that no request walks more than this.
OFFSET_MAX = 10_000

Limit = Annotated[
    int, AfterValidator(_between(1, LIMIT_MAX)), rule(f"Limit must be between 1 and {LIMIT_MAX}")
]
Offset = Annotated[
    int,
    AfterValidator(_between(0, OFFSET_MAX)),
    rule(f"Offset must be between 0 and {OFFSET_MAX}"),
]

# The `after` cursor: the last listed ticket's id bytes in base64url (16 characters, unpadded).
# Opaque to clients; they take it from the `Link: <...>; rel="next"` header.
_CURSOR = re.compile(r"[A-Za-z0-9_-]{16}")


def next_cursor(listing: str) -> str:
    """The cursor of the page that follows the ticket listed under `listing`."""
    return base64.urlsafe_b64encode(ObjectId(listing).binary).decode().rstrip("=")


def _listing_after(value: str | None) -> str | None:
    """The listing key a cursor stands for (every 16 such characters are 12 bytes)."""
    if value is None:
        return None
    if not _CURSOR.fullmatch(value):
        raise ValueError("not a cursor")
    return str(ObjectId(base64.urlsafe_b64decode(value)))


After = Annotated[
    str | None,
    AfterValidator(_listing_after),
    rule("After must be a cursor from a previous page's Link header"),
]


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

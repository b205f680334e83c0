"""`/api/orders` request and response bodies."""

from __future__ import annotations

from typing import Annotated

from bson import ObjectId
from pydantic import AfterValidator, BaseModel

from ticketing_common.events import OrderStatus
from ticketing_common.moments import iso
from ticketing_common.mongo import object_id
from ticketing_common.validation import required, rule
from ticketing_orders.domain import OrderDoc, TicketDoc


def _ticket_id(value: str) -> str:
    if object_id(value) is None:
        raise ValueError("not an ObjectId")
    return value


class NewOrder(BaseModel):
    """POST `/api/orders`: the ticket to reserve."""

    ticketId: Annotated[str, AfterValidator(_ticket_id), rule("TicketId must be provided")] = (
        required()
    )

    @property
    def ticket_oid(self) -> ObjectId:
        return ObjectId(self.ticketId)


class TicketOut(BaseModel):
    """The orders service's current copy of the ordered ticket."""

    id: str
    title: str
    price: float
    version: int

    @classmethod
    def of(cls, ticket: TicketDoc) -> TicketOut:
        """The replica's public fields (the rest is ignored)."""
        return cls.model_validate({**ticket, "id": str(ticket["_id"])})


class OrderOut(BaseModel):
    """An order, as every route answers it."""

    id: str
    userId: str
    status: OrderStatus
    expiresAt: str
    version: int
    # The ticket's price when the order was placed: what the buyer is shown and charged.
    price: float
    refunded: bool
    ticket: TicketOut | None  # None only if the replica lost the ticket, which it never deletes

    @classmethod
    def of(cls, order: OrderDoc, ticket: TicketDoc | None) -> OrderOut:
        """The order as the API shows it: its own price (what the buyer pays, whatever the
        ticket costs now), whether a payment of it was refunded, and the replica's ticket as
        it is now."""
        return cls(
            id=str(order["_id"]),
            userId=order["userId"],
            status=OrderStatus(order["status"]),
            expiresAt=iso(order["expiresAt"]),
            version=order["version"],
            price=order["price"],
            refunded=bool(order.get("refunded", False)),
            ticket=TicketOut.of(ticket) if ticket is not None else None,
        )

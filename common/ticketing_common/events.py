"""Event contracts: one model per subject, with the SPEC's exact field names."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, PlainSerializer

from ticketing_common.moments import iso

# Events write moments the way the APIs do: milliseconds and a `Z`.
Moment = Annotated[datetime, PlainSerializer(iso, return_type=str, when_used="json")]


class Subject(StrEnum):
    """SPEC subjects; `:` is written `.` so that NATS wildcards can cover them."""

    TICKET_CREATED = "ticket.created"
    TICKET_UPDATED = "ticket.updated"
    ORDER_CREATED = "order.created"
    ORDER_CANCELLED = "order.cancelled"
    EXPIRATION_COMPLETE = "expiration.complete"
    PAYMENT_CREATED = "payment.created"
    PAYMENT_REFUNDED = "payment.refunded"


STREAM_SUBJECTS = ["ticket.*", "order.*", "expiration.*", "payment.*"]


class OrderStatus(StrEnum):
    CREATED = "created"
    AWAITING_PAYMENT = "awaiting:payment"
    COMPLETE = "complete"
    CANCELLED = "cancelled"


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    subject: ClassVar[Subject]
    # The field naming the aggregate the event is about: its events are applied in order.
    key_field: ClassVar[str] = "id"

    def key(self) -> str:
        return str(getattr(self, self.key_field))

    def payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class TicketCreated(Event):
    subject = Subject.TICKET_CREATED
    id: str
    version: int
    title: str
    price: float
    userId: str


class TicketUpdated(Event):
    subject = Subject.TICKET_UPDATED
    id: str
    version: int
    title: str
    price: float
    userId: str
    orderId: str | None = None


class TicketRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    id: str


class PricedTicketRef(TicketRef):
    price: float


class OrderCreated(Event):
    subject = Subject.ORDER_CREATED
    id: str
    version: int
    status: OrderStatus
    userId: str
    expiresAt: Moment
    ticket: PricedTicketRef


class OrderCancelled(Event):
    subject = Subject.ORDER_CANCELLED
    id: str
    version: int
    ticket: TicketRef


class ExpirationComplete(Event):
    subject = Subject.EXPIRATION_COMPLETE
    key_field = "orderId"
    orderId: str


class PaymentCreated(Event):
    subject = Subject.PAYMENT_CREATED
    key_field = "orderId"
    id: str
    orderId: str
    stripeId: str


class PaymentRefunded(Event):
    subject = Subject.PAYMENT_REFUNDED
    key_field = "orderId"
    id: str
    orderId: str
    stripeId: str


EVENT_TYPES: dict[Subject, type[Event]] = {
    cls.subject: cls
    for cls in (
        TicketCreated,
        TicketUpdated,
        OrderCreated,
        OrderCancelled,
        ExpirationComplete,
        PaymentCreated,
        PaymentRefunded,
    )
}

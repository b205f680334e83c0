"""The request and response bodies of `/api/orders`, without a server: the SPEC's validation
message, and the JSON an order is answered with."""

import json
from datetime import UTC, datetime

import pytest
from bson import ObjectId
from pydantic import ValidationError

from ticketing_common.web import validation_items
from ticketing_orders.domain import TicketDoc, new_order
from ticketing_orders.schemas import NewOrder, OrderOut

TICKET_ID_RULE = {"message": "TicketId must be provided", "field": "ticketId"}


def _errors_of(body):
    """What the API answers for `body`, as FastAPI reports a body's errors (under `body`)."""
    with pytest.raises(ValidationError) as caught:
        NewOrder.model_validate(body)
    return validation_items([{**e, "loc": ("body", *e["loc"])} for e in caught.value.errors()])


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"ticketId": ""},
        {"ticketId": "   "},
        {"ticketId": "abc"},
        {"ticketId": "z" * 24},
        {"ticketId": "a" * 23},
        {"ticketId": 123},
        {"ticketId": None},
        {"ticketId": ["a" * 24]},
        {"ticketId": {"id": "a" * 24}},
    ],
)
def test_ticket_id_must_be_an_object_id(body):
    assert _errors_of(body) == (400, [TICKET_ID_RULE])


def test_a_new_order_names_its_ticket():
    ticket_id = ObjectId()
    assert NewOrder.model_validate({"ticketId": str(ticket_id)}).ticket_oid == ticket_id


def test_an_order_is_answered_with_the_spec_fields():
    ticket: TicketDoc = {"_id": ObjectId(), "title": "concert", "price": 20, "version": 0}
    now = datetime(2026, 12, 2, 12, 0, 0, 5000, tzinfo=UTC)
    order = new_order("u1", ticket, now, 900)

    answered = json.loads(OrderOut.of(order, ticket).model_dump_json())

    assert list(answered) == [
        "id",
        "userId",
        "status",
        "expiresAt",
        "version",
        "price",
        "refunded",
        "ticket",
    ]
    assert answered == {
        "id": str(order["_id"]),
        "userId": "u1",
        "status": "created",
        "expiresAt": "2026-12-02T12:15:00.005Z",
        "version": 0,
        "price": 20,
        "refunded": False,
        "ticket": {"id": str(ticket["_id"]), "title": "concert", "price": 20, "version": 0},
    }
    assert OrderOut.of(order, None).ticket is None

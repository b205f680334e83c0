"""Pure pieces of common, no server: error statuses, event contracts, outbox entries, the
handler registry."""

import pytest

from ticketing_common.errors import (
    BadRequestError,
    DomainError,
    ForbiddenError,
    NotAuthorizedError,
    NotFoundError,
    PaymentDeclinedError,
)
from ticketing_common.events import OrderCancelled, OrderCreated, TicketUpdated
from ticketing_common.handlers import handlers, on
from ticketing_common.outbox import add_events, pending_events, with_events
from ticketing_common.web import status_of


class SoldOut(BadRequestError):
    """A service's own refusal: the status of its nearest kind."""


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BadRequestError("x"), 400),
        (NotAuthorizedError(), 401),
        (PaymentDeclinedError(), 402),
        (ForbiddenError(), 403),
        (NotFoundError(), 404),
        (SoldOut("Sold out"), 400),
        (DomainError("plain"), 400),
    ],
)
def test_each_domain_error_has_the_status_of_its_kind(error, status):
    assert status_of(error) == status


def test_a_domain_error_says_its_message_and_field():
    assert BadRequestError("Title is required", field="title").items() == [
        {"message": "Title is required", "field": "title"}
    ]
    assert NotAuthorizedError().items() == [{"message": "Not authorized"}]


def test_events_carry_the_spec_payload_and_subject():
    event = TicketUpdated(id="t1", version=2, title="x", price=10, userId="u1", orderId=None)
    assert str(event.subject) == "ticket.updated"
    assert event.payload()["version"] == 2
    assert OrderCancelled(id="o1", version=1, ticket={"id": "t1"}).key() == "o1"


def test_a_document_s_events_keep_the_order_they_were_written_in():
    first = TicketUpdated(id="t1", version=1, title="a", price=1, userId="u", orderId=None)
    second = TicketUpdated(id="t1", version=2, title="b", price=1, userId="u", orderId=None)
    doc = with_events({"_id": 1}, first)
    update = add_events(doc, {"$set": {"title": "b"}}, second)
    # The write raises the counter by one and stores the new event after the first.
    assert update["$inc"] == {"outboxRev": 1}
    stored = dict(doc["outbox"])
    stored.update({k.split(".", 1)[1]: v for k, v in update["$set"].items() if "." in k})
    pending = pending_events([{"outbox": stored}])
    assert [e["data"]["version"] for e in pending] == [1, 2]


def test_a_service_has_one_handler_per_event_type():
    async def apply(event, context):
        return None

    registered = handlers(on(OrderCreated, apply), on(OrderCancelled, apply))
    assert set(registered) == {OrderCreated, OrderCancelled}
    with pytest.raises(ValueError, match="two handlers of OrderCreated"):
        handlers(on(OrderCreated, apply), on(OrderCreated, apply))

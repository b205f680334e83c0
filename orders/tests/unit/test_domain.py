"""The order's rules, free of I/O: placing, cancelling, expiring, paying, and what the API
shows. No server: each decision is given an order as read and says what to write."""

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from ticketing_common.errors import BadRequestError, NotAuthorizedError, NotFoundError
from ticketing_common.moments import epoch_ms
from ticketing_common.outbox import pending_events
from ticketing_orders.domain import (
    COMPLETION,
    OrderDoc,
    TicketDoc,
    cancel_by_user,
    completing,
    expire,
    expiry,
    new_order,
    orderable,
    overdue_cutoff,
    owned,
)
from ticketing_orders.schemas import OrderOut

NOW = datetime(2026, 12, 2, 12, 0, 0, 123456, tzinfo=UTC)
USER = "u1"
STATUSES = ["created", "awaiting:payment", "complete", "cancelled"]


def _ticket(price: float = 20) -> TicketDoc:
    return {"_id": ObjectId(), "title": "concert", "price": price, "version": 0}


def _order(status: str = "created", version: int = 0, ticket: TicketDoc | None = None) -> OrderDoc:
    """An order as the database would hand it back, its first event already published."""
    order = new_order(USER, ticket or _ticket(), NOW, 900)
    for key in ("outbox", "outboxRev", "outboxAt"):
        order.pop(key)
    order["status"] = status
    order["version"] = version
    return order


def _events(update):
    """The events an update stores in the document's outbox, in order."""
    entries = {k[len("outbox.") :]: v for k, v in update.get("$set", {}).items() if "." in k}
    return pending_events([{"outbox": entries}])


# --- placing --------------------------------------------------------------------------------


def test_an_order_expires_after_the_window_to_the_millisecond():
    assert expiry(NOW, 900) == datetime(2026, 12, 2, 12, 15, 0, 123000, tzinfo=UTC)
    assert expiry(NOW, 60) - NOW <= timedelta(seconds=60)


def test_an_unknown_ticket_cannot_be_ordered():
    with pytest.raises(NotFoundError):
        orderable(None)
    ticket = _ticket()
    assert orderable(ticket) is ticket


def test_a_new_order_holds_its_ticket_at_its_price_until_it_expires():
    ticket = _ticket(price=35.5)

    order = new_order(USER, ticket, NOW, 60)

    assert order["status"] == "created"
    assert order["version"] == 0
    assert order["userId"] == USER
    assert order["price"] == 35.5
    assert order["ticketId"] == order["activeTicketId"] == ticket["_id"]
    assert order["expiresAt"] == expiry(NOW, 60)
    assert order["openUntil"] == epoch_ms(order["expiresAt"])
    assert "refunded" not in order


def test_a_new_order_carries_its_order_created_event():
    ticket = _ticket(price=35.5)

    order = new_order(USER, ticket, NOW, 900)

    (event,) = pending_events([order])
    assert event["subject"] == "order.created"
    assert event["data"] == {
        "id": str(order["_id"]),
        "version": 0,
        "status": "created",
        "userId": USER,
        "expiresAt": "2026-12-02T12:15:00.123Z",
        "ticket": {"id": str(ticket["_id"]), "price": 35.5},
    }


# --- cancelling by the user, in SPEC order: 404, 401, 400 -----------------------------------


def test_cancelling_an_unknown_order_is_a_404():
    with pytest.raises(NotFoundError):
        cancel_by_user(None, USER)


@pytest.mark.parametrize("status", STATUSES)
def test_cancelling_another_users_order_is_a_401_whatever_its_status(status):
    with pytest.raises(NotAuthorizedError):
        cancel_by_user(_order(status), "someone-else")


def test_a_completed_order_cannot_be_cancelled():
    with pytest.raises(BadRequestError, match="Cannot cancel a completed order"):
        cancel_by_user(_order("complete"), USER)


def test_a_cancelled_order_stays_cancelled_without_a_new_event():
    assert cancel_by_user(_order("cancelled"), USER) is None


@pytest.mark.parametrize("status", ["created", "awaiting:payment"])
def test_cancelling_frees_the_ticket_and_says_so_once(status):
    order = _order(status, version=3)

    update = cancel_by_user(order, USER)

    assert update["$set"]["status"] == "cancelled"
    assert set(update["$unset"]) == {"activeTicketId", "openUntil"}
    (event,) = _events(update)
    assert event["subject"] == "order.cancelled"
    # The event names the version the write makes.
    assert event["data"] == {
        "id": str(order["_id"]),
        "version": 4,
        "ticket": {"id": str(order["ticketId"])},
    }


def test_the_owner_sees_their_own_order():
    order = _order()
    assert owned(order, USER) is order
    with pytest.raises(NotFoundError):
        owned(None, USER)
    with pytest.raises(NotAuthorizedError):
        owned(order, "someone-else")


# --- expiring -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["created", "awaiting:payment"])
def test_an_unpaid_order_expires_as_cancelled(status):
    order = _order(status, version=1)

    update = expire(order)

    assert update["$set"]["status"] == "cancelled"
    assert "activeTicketId" in update["$unset"]
    (event,) = _events(update)
    assert (event["subject"], event["data"]["version"]) == ("order.cancelled", 2)


@pytest.mark.parametrize("status", ["complete", "cancelled"])
def test_a_paid_or_cancelled_order_does_not_expire(status):
    assert expire(_order(status)) is None


def test_an_order_is_overdue_once_its_grace_has_passed():
    assert overdue_cutoff(NOW, 30) == epoch_ms(NOW) - 30_000
    assert overdue_cutoff(NOW, 0) == epoch_ms(NOW)


# --- paying ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["created", "awaiting:payment"])
def test_a_live_order_completes_without_an_event(status):
    update = completing(_order(status))
    assert update == COMPLETION
    assert update == {"$set": {"status": "complete"}, "$unset": {"openUntil": ""}}


def test_a_cancelled_order_never_completes():
    assert completing(_order("cancelled")) is None


def test_a_complete_order_completes_once():
    assert completing(_order("complete")) is None


# --- what the API shows ---------------------------------------------------------------------


def _shown(order, ticket):
    return OrderOut.of(order, ticket).model_dump(mode="json")


def test_an_order_shows_its_own_price_and_the_ticket_as_it_is_now():
    ticket = _ticket(price=20)
    order = _order(ticket=ticket)
    now = {**ticket, "title": "renamed", "price": 35, "version": 1}

    shown = _shown(order, now)

    assert shown == {
        "id": str(order["_id"]),
        "userId": USER,
        "status": "created",
        "expiresAt": "2026-12-02T12:15:00.123Z",
        "version": 0,
        "price": 20,  # what this buyer pays, whatever the ticket costs now
        "refunded": False,
        "ticket": {"id": str(ticket["_id"]), "title": "renamed", "price": 35, "version": 1},
    }


def test_an_order_shows_whether_its_payment_was_refunded():
    order = _order("cancelled", version=1)
    assert _shown(order, None)["refunded"] is False
    order["refunded"] = True
    shown = _shown(order, None)
    assert (shown["status"], shown["refunded"], shown["version"]) == ("cancelled", True, 1)


def test_an_order_whose_ticket_the_replica_lost_shows_none():
    assert _shown(_order(), None)["ticket"] is None

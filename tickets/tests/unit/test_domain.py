"""The ticket's decisions, pure: what an edit, a reservation and a release write (and the
`ticket:updated` they store with it), decided on the ticket as read. No server."""

import copy

import pytest
from bson import ObjectId

from ticketing_common.errors import BadRequestError, NotAuthorizedError, NotFoundError
from ticketing_tickets.domain import edit, held_by_another, new_ticket, release, reserve
from ticketing_tickets.events.publishers import ticket_created

OWNER = "6a0000000000000000000abc"
ORDER = "6b0000000000000000000001"
OTHER_ORDER = "6b0000000000000000000002"


def applied(ticket, update):
    """`ticket` as MongoDB would leave it after `update` ($set, $unset, $inc, $min; dotted
    paths). The repository also raises `rev`, the condition of the write: so does this."""
    doc = copy.deepcopy(ticket)

    def parent(path):
        *heads, last = path.split(".")
        node = doc
        for head in heads:
            node = node.setdefault(head, {})
        return node, last

    for op, fields in update.items():
        for path, value in fields.items():
            node, key = parent(path)
            if op == "$set":
                node[key] = copy.deepcopy(value)
            elif op == "$unset":
                node.pop(key, None)
            elif op == "$inc":
                node[key] = node.get(key, 0) + value
            elif op == "$min":
                node[key] = min(node.get(key, value), value)
            else:
                raise AssertionError(f"unexpected operator {op}")
    doc["rev"] += 1
    return doc


def events(update):
    """The events `update` stores in the outbox, in order: `(subject, payload)`."""
    entries = [v for k, v in update.get("$set", {}).items() if k.startswith("outbox.")]
    return [(e["subject"], e["data"]) for e in sorted(entries, key=lambda e: e["seq"])]


@pytest.fixture
def ticket():
    """A ticket as stored when put up for sale (its `ticket:created` already published)."""
    return new_ticket("concert", 20.0, OWNER)


def reserved(ticket, order_id=ORDER):
    return applied(ticket, reserve(ticket, order_id))


def payload(ticket, **changes):
    """The SPEC payload of `ticket:updated` for `ticket` with `changes`."""
    data = {
        "id": str(ticket["_id"]),
        "version": ticket["version"] + 1,
        "title": ticket["title"],
        "price": ticket["price"],
        "userId": ticket["userId"],
    }
    return {**data, **changes}


# --- a new ticket -----------------------------------------------------------------------------


def test_a_new_ticket_is_free_at_version_0_and_announced_as_it_is():
    ticket = new_ticket("concert", 20.5, OWNER)
    assert isinstance(ticket["_id"], ObjectId)
    assert (ticket["version"], ticket["rev"]) == (0, 0)
    assert "orderId" not in ticket
    assert ticket["listing"] == str(ticket["_id"])  # listed, in creation order
    event = ticket_created(ticket)
    assert str(event.subject) == "ticket.created"
    assert event.payload() == {
        "id": str(ticket["_id"]),
        "version": 0,
        "title": "concert",
        "price": 20.5,
        "userId": OWNER,
    }


# --- edit: 404, reserved (400), not the owner (401), in SPEC order -----------------------------


def test_editing_no_ticket_is_a_404():
    with pytest.raises(NotFoundError) as refused:
        edit(None, OWNER, "new title", 100)
    assert refused.value.message == "Not Found"


def test_a_reserved_ticket_cannot_be_edited_even_by_a_stranger(ticket):
    held = reserved(ticket)
    for user in (OWNER, "someone else"):  # reserved comes before not the owner
        with pytest.raises(BadRequestError) as refused:
            edit(held, user, "new title", 100)
        assert refused.value.message == "Cannot edit a reserved ticket"


def test_only_the_owner_edits_a_free_ticket(ticket):
    with pytest.raises(NotAuthorizedError) as refused:
        edit(ticket, "someone else", "new title", 100)
    assert refused.value.message == "Not authorized"


def test_an_edit_sets_title_and_price_and_announces_the_next_version(ticket):
    update = edit(ticket, OWNER, "new title", 100.0)
    assert events(update) == [
        ("ticket.updated", payload(ticket, title="new title", price=100.0))  # no orderId
    ]
    after = applied(ticket, update)
    assert (after["title"], after["price"], after["version"]) == ("new title", 100.0, 1)
    assert "orderId" not in after


def test_each_edit_raises_the_version_by_exactly_one(ticket):
    for version in (1, 2, 3):
        update = edit(ticket, OWNER, f"v{version}", 10.0)
        assert [data["version"] for _, data in events(update)] == [version]
        ticket = applied(ticket, update)
        assert ticket["version"] == version


def test_the_events_of_successive_changes_keep_their_order(ticket):
    first = edit(ticket, OWNER, "first", 10.0)
    second = edit(applied(ticket, first), OWNER, "second", 10.0)
    (seq_first,) = [v["seq"] for k, v in first["$set"].items() if k.startswith("outbox.")]
    (seq_second,) = [v["seq"] for k, v in second["$set"].items() if k.startswith("outbox.")]
    assert seq_second > seq_first


# --- reserve: order:created -------------------------------------------------------------------


def test_a_reservation_holds_the_ticket_for_the_order_and_announces_it(ticket):
    update = reserve(ticket, ORDER)
    assert events(update) == [("ticket.updated", payload(ticket, orderId=ORDER))]
    after = applied(ticket, update)
    assert (after["orderId"], after["version"]) == (ORDER, 1)


def test_a_repeated_reservation_changes_nothing(ticket):
    assert reserve(reserved(ticket), ORDER) is None


def test_a_reservation_never_takes_over_another_orders_ticket(ticket):
    held = reserved(ticket)
    assert reserve(held, OTHER_ORDER) is None
    # ... and the new order waits for the holder's cancellation rather than being dropped.
    assert held_by_another(held, OTHER_ORDER) == ORDER


def test_nothing_to_wait_for_when_free_held_by_the_order_or_the_order_was_cancelled(ticket):
    assert held_by_another(ticket, ORDER) is None
    assert held_by_another(reserved(ticket), ORDER) is None
    # A late `order:created` of an order already seen cancelled does not wait: it is dropped.
    early = applied(reserved(ticket), release(reserved(ticket), OTHER_ORDER))
    assert held_by_another(early, OTHER_ORDER) is None
    assert reserve(early, OTHER_ORDER) is None


def test_a_late_order_created_of_a_cancelled_order_reserves_nothing(ticket):
    # The order's `order:cancelled` arrives first: remembered, with no version and no event.
    update = release(ticket, ORDER)
    assert update == {"$set": {f"releasedOrders.{ORDER}": True}}
    assert events(update) == []
    remembered = applied(ticket, update)
    assert remembered["version"] == 0
    # The order's late `order:created` then reserves nothing.
    assert reserve(remembered, ORDER) is None


# --- release: order:cancelled -----------------------------------------------------------------


def test_cancelling_the_holding_order_frees_the_ticket_and_announces_it(ticket):
    held = reserved(ticket)
    update = release(held, ORDER)
    assert events(update) == [("ticket.updated", payload(held))]  # no orderId key at all
    after = applied(held, update)
    assert "orderId" not in after
    assert after["version"] == 2


def test_a_repeated_cancellation_changes_nothing(ticket):
    held = reserved(ticket)
    freed = applied(held, release(held, ORDER))
    assert release(freed, ORDER) is None
    # Nor may the order's own `order:created`, delivered once more, reserve the ticket again.
    assert reserve(freed, ORDER) is None


def test_cancelling_another_order_keeps_the_holder_and_changes_no_version(ticket):
    held = reserved(ticket)
    update = release(held, OTHER_ORDER)
    assert "$inc" not in update
    assert events(update) == []
    after = applied(held, update)
    assert (after["orderId"], after["version"]) == (ORDER, 1)


def test_the_ticket_can_be_reserved_again_after_a_cancellation(ticket):
    held = reserved(ticket)
    freed = applied(held, release(held, ORDER))
    update = reserve(freed, OTHER_ORDER)
    assert events(update) == [("ticket.updated", payload(freed, orderId=OTHER_ORDER))]
    after = applied(freed, update)
    assert (after["orderId"], after["version"]) == (OTHER_ORDER, 3)


# --- the listing key: present exactly while no order holds the ticket ---------------------------


def listed(doc):
    """The invariant every write keeps: listed (under its id) exactly while free."""
    return ("listing" in doc) is ("orderId" not in doc) and doc.get("listing") in (
        None,
        str(doc["_id"]),
    )


def test_every_decision_keeps_the_ticket_listed_exactly_while_free(ticket):
    held = reserved(ticket)
    assert "listing" not in held and listed(held)
    remembered = applied(held, release(held, OTHER_ORDER))  # another order's cancellation
    assert "listing" not in remembered and listed(remembered)
    freed = applied(held, release(held, ORDER))
    assert freed["listing"] == ticket["listing"] and listed(freed)  # back in its place
    again = applied(freed, reserve(freed, OTHER_ORDER))
    assert "listing" not in again and listed(again)
    early = applied(ticket, release(ticket, ORDER))  # cancelled before it was reserved
    assert early["listing"] == ticket["listing"] and listed(early)
    edited = applied(ticket, edit(ticket, OWNER, "new", 5.0))
    assert edited["listing"] == ticket["listing"]

"""The ticket's optimistic concurrency (the original's models/__test__/ticket.test.ts): every
write is conditional on the write revision `rev` the decision was made on."""

from bson import ObjectId

from ticketing_common.mongo import update_versioned
from ticketing_tickets.domain import edit, release, reserve
from ticketing_tickets.repository import Tickets


async def write_if_unchanged(tickets, read, update):
    """Write `update` only if nobody wrote since `read`; None if someone did."""
    return await update_versioned(tickets.collection, read["_id"], read["rev"], update, field="rev")


async def test_implements_optimistic_concurrency_control(db):
    tickets = Tickets(db, None)
    created = await tickets.create("concert", 5, "123")
    # Two readers fetch the same ticket and each decide a change.
    first = await tickets.get(created["_id"])
    second = await tickets.get(created["_id"])
    assert await write_if_unchanged(tickets, first, edit(first, "123", "first", 10)) is not None
    # The second was decided on a stale read: it must not apply.
    assert await write_if_unchanged(tickets, second, edit(second, "123", "second", 15)) is None
    stored = await tickets.get(created["_id"])
    assert (stored["title"], stored["price"], stored["version"]) == ("first", 10, 1)


async def test_increments_the_version_number_on_multiple_saves(db):
    tickets = Tickets(db, None)
    created = await tickets.create("concert", 20, "123")
    assert created["version"] == 0
    for expected in (1, 2, 3):
        doc, changed = await tickets.change(
            created["_id"], lambda d, n=expected: edit(d, "123", f"v{n}", 20)
        )
        assert changed and doc["version"] == expected


async def test_a_change_decided_on_a_stale_read_is_decided_again(db):
    tickets = Tickets(db, None)
    created = await tickets.create("concert", 20, "123")
    stale = await tickets.get(created["_id"])
    # Another replica reserves and releases the ticket meanwhile.
    order_id = str(ObjectId())
    await tickets.change(created["_id"], lambda d: reserve(d, order_id))
    await tickets.change(created["_id"], lambda d: release(d, order_id))
    assert await write_if_unchanged(tickets, stale, edit(stale, "123", "late", 22)) is None
    # Given the stale read, the change reads again and decides on the ticket as it now is.
    decided_on = []

    def late_edit(doc):
        decided_on.append(doc["rev"])
        return edit(doc, "123", "late", 22)

    doc, changed = await tickets.outbox.change(created["_id"], late_edit, field="rev", read=stale)
    assert decided_on == [stale["rev"], stale["rev"] + 2]
    assert changed and doc["title"] == "late" and doc["version"] == 3
    assert "orderId" not in doc

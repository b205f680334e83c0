"""The ticket's optimistic concurrency (the original's models/__test__/ticket.test.ts)."""

from bson import ObjectId

from ticketing_tickets.models import Tickets, edit, release, reserve


async def test_implements_optimistic_concurrency_control(db):
    tickets = Tickets(db, None)
    created = await tickets.create("concert", 5, "123")
    # Two readers fetch the same ticket and each decide a change.
    first = await tickets.get(created["_id"])
    second = await tickets.get(created["_id"])
    assert await tickets.write_if_unchanged(first, edit(first, "123", "first", 10)) is not None
    # The second was decided on a stale read: it must not apply.
    assert await tickets.write_if_unchanged(second, edit(second, "123", "second", 15)) is None
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
    assert await tickets.write_if_unchanged(stale, edit(stale, "123", "late", 22)) is None
    doc, changed = await tickets.change(created["_id"], lambda d: edit(d, "123", "late", 22))
    assert changed and doc["title"] == "late" and doc["version"] == 3
    assert "orderId" not in doc


async def test_remembering_a_cancelled_order_changes_no_version(db):
    tickets = Tickets(db, None)
    created = await tickets.create("concert", 20, "123")
    early = str(ObjectId())
    doc, changed = await tickets.change(created["_id"], lambda d: release(d, early))
    assert (changed and doc["version"] == 0 and "outbox" not in doc) or doc["outbox"].keys()
    # The order's late `order:created` then reserves nothing.
    doc, changed = await tickets.change(created["_id"], lambda d: reserve(d, early))
    assert not changed and "orderId" not in doc and doc["version"] == 0

"""What the buyer is charged, and the sweep that cancels an order whose expiry job was lost."""

from bson import ObjectId

from ticketing_common.events import TicketUpdated
from ticketing_orders.sweeps import cancel_overdue
from ticketing_testing import eventually

from .support import stored_order

URL = "/api/orders"


async def test_the_order_keeps_the_price_it_was_placed_at(client, signin, new_ticket, publish):
    ticket = await new_ticket(title="concert", price=20)
    user = signin()
    placed = (await client.post(URL, json={"ticketId": str(ticket["_id"])}, headers=user)).json()
    edit = TicketUpdated(id=str(ticket["_id"]), version=1, title="concert", price=35, userId="s")
    await publish(edit)

    async def repriced():
        shown = (await client.get(f"{URL}/{placed['id']}", headers=user)).json()
        return shown if shown["ticket"]["price"] == 35 else None

    shown = await eventually(repriced)
    assert shown["price"] == 20  # the ticket's price now is not what this buyer pays


async def test_an_overdue_order_is_cancelled_without_its_expiration_event(
    start, signin, new_ticket, db, published
):
    # No expiration service runs here: as if its job had been lost from Redis.
    async with start(
        expiration_window_seconds=0, order_overdue_grace_seconds=0, overdue_sweep_seconds=0.05
    ) as client:
        ticket = await new_ticket()
        user = signin()
        order = (await client.post(URL, json={"ticketId": str(ticket["_id"])}, headers=user)).json()

        (cancelled,) = await eventually(lambda: published("order.cancelled"))
        assert cancelled == {"id": order["id"], "version": 1, "ticket": {"id": str(ticket["_id"])}}
        doc = await stored_order(db, order)
        assert doc["status"] == "cancelled" and "activeTicketId" not in doc
        again = await client.post(URL, json={"ticketId": str(ticket["_id"])}, headers=signin())
        assert again.status_code == 201


async def test_the_sweep_leaves_orders_within_their_grace_and_paid_ones(
    start, signin, new_ticket, db
):
    async with start(expiration_window_seconds=0, overdue_sweep_seconds=3600) as client:
        runtime = client._transport.app.state.runtime
        fresh, paid = await new_ticket(), await new_ticket()
        placed = [
            (await client.post(URL, json={"ticketId": str(t["_id"])}, headers=signin())).json()
            for t in (fresh, paid)
        ]
        await db["orders"].update_one(
            {"_id": ObjectId(placed[1]["id"])},
            {"$set": {"status": "complete"}, "$unset": {"openUntil": ""}},
        )
        assert await cancel_overdue(runtime) == 0  # the default grace (30 s) has not passed
        runtime.settings = runtime.settings.model_copy(update={"order_overdue_grace_seconds": 0})
        assert await cancel_overdue(runtime) == 1
        statuses = [(await stored_order(db, o))["status"] for o in placed]
        assert statuses == ["cancelled", "complete"]

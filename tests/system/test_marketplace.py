"""Tickets and orders working together over the real bus, through the ingress."""

import asyncio
import json

import nats

from ticketing_testing import eventually

from .support import listed


async def test_a_created_ticket_becomes_orderable_and_an_order_reserves_it(users):
    seller, buyer = await users(), await users()
    ticket = await seller.sell("concert", 20)
    assert await eventually(lambda: listed(buyer, ticket["id"]))

    order = await buyer.order_when_orderable(ticket["id"])
    assert order["status"] == "created"
    assert order["ticket"] == {"id": ticket["id"], "title": "concert", "price": 20, "version": 0}

    # tickets hears order:created: the ticket is reserved, unlisted and no longer editable.
    async def reserved():
        shown = (await buyer.get(f"/api/tickets/{ticket['id']}")).json()
        return shown.get("orderId") == order["id"]

    await eventually(reserved)
    assert not await listed(buyer, ticket["id"])
    edit = await seller.http.put(
        f"/api/tickets/{ticket['id']}", json={"title": "changed", "price": 30}
    )
    assert edit.status_code == 400
    assert edit.json() == {"errors": [{"message": "Cannot edit a reserved ticket"}]}

    mine = (await buyer.get("/api/orders")).json()
    assert [o["id"] for o in mine] == [order["id"]]


async def test_an_edit_reaches_the_orders_replica(users):
    seller, buyer = await users(), await users()
    ticket = await seller.sell("draft", 10)
    edit = await seller.http.put(
        f"/api/tickets/{ticket['id']}", json={"title": "final", "price": 12.5}
    )
    assert edit.status_code == 200
    assert edit.json()["version"] == 1

    # One order, placed as soon as the replica knows the ticket: at version 0 or 1, depending on
    # how far the bus has got. An order shows the replica's ticket as it is now, so watch it.
    order = await buyer.order_when_orderable(ticket["id"])

    async def replica_past_the_edit():
        shown = (await buyer.get(f"/api/orders/{order['id']}")).json()["ticket"]
        # >= 1, not == 1: the reservation this order causes moves the replica on to 2 (and a
        # cancellation to 3). Versions apply strictly in order, so any of them holds the edit.
        return shown if shown["version"] >= 1 else None

    shown = await eventually(replica_past_the_edit)
    assert (shown["title"], shown["price"]) == ("final", 12.5)

    # Now that the replica holds the edit, a new order is placed (and priced) at it. Each step
    # waits for the effect of the one before, which nothing but the next step can undo.
    async def held_by_the_order():
        held = (await seller.get(f"/api/tickets/{ticket['id']}")).json()
        return held.get("orderId") == order["id"]

    await eventually(held_by_the_order)
    cancelled = await buyer.http.delete(f"/api/orders/{order['id']}")
    assert cancelled.status_code == 204
    await eventually(lambda: listed(buyer, ticket["id"]))
    again = await buyer.order(ticket["id"])
    assert again.status_code == 201, again.text
    reordered = again.json()
    assert reordered["price"] == 12.5
    assert (reordered["ticket"]["title"], reordered["ticket"]["price"]) == ("final", 12.5)
    assert reordered["ticket"]["version"] >= 1


async def test_a_cancellation_releases_the_ticket(users):
    seller, buyer = await users(), await users()
    ticket = await seller.sell()
    order = await buyer.order_when_orderable(ticket["id"])
    await eventually(lambda: _not(listed(buyer, ticket["id"])))

    cancelled = await buyer.http.delete(f"/api/orders/{order['id']}")
    assert cancelled.status_code == 204
    assert (await buyer.get(f"/api/orders/{order['id']}")).json()["status"] == "cancelled"
    assert await eventually(lambda: listed(buyer, ticket["id"]))
    shown = (await buyer.get(f"/api/tickets/{ticket['id']}")).json()
    assert "orderId" not in shown
    again = await buyer.order(ticket["id"])
    assert again.status_code == 201


async def test_a_duplicate_or_stale_event_changes_nothing(users, stack):
    seller, buyer = await users(), await users()
    ticket = await seller.sell("original", 10)
    for version, title in ((1, "newer"), (2, "newest")):
        response = await seller.http.put(
            f"/api/tickets/{ticket['id']}", json={"title": title, "price": 10}
        )
        assert response.json()["version"] == version

    # Replay an old ticket:updated straight onto the bus, with a fresh message id.
    nc = await nats.connect(stack.urls["nats"])
    stale = {"id": ticket["id"], "version": 1, "title": "newer", "price": 10, "userId": seller.id}
    await nc.jetstream().publish(
        "ticket.updated", json.dumps(stale).encode(), headers={"Nats-Msg-Id": "stale-replay"}
    )
    await nc.close()

    async def newest_order():
        response = await buyer.order(ticket["id"])
        if response.status_code != 201:
            return None
        order = response.json()
        if order["ticket"]["title"] == "newest":
            return order
        await buyer.http.delete(f"/api/orders/{order['id']}")
        return None

    order = await eventually(newest_order)
    await asyncio.sleep(1)  # give the stale event time to be (wrongly) applied
    current = (await buyer.get(f"/api/orders/{order['id']}")).json()
    assert current["ticket"]["title"] == "newest"
    # Reservations move the ticket's version on; the stale version 1 never moved it back.
    held = (await seller.get(f"/api/tickets/{ticket['id']}")).json()
    assert current["ticket"]["version"] == held["version"] > 2


async def test_fifty_buyers_one_ticket_one_winner(users):
    seller = await users()
    buyers = await asyncio.gather(*(users() for _ in range(50)))
    for _ in range(10):
        await _one_winner(seller, buyers)


async def _one_winner(seller, buyers):
    ticket = await seller.sell()
    await buyers[0].order_when_orderable(ticket["id"])  # warm-up: known to the replica
    first = (await buyers[0].get("/api/orders")).json()[0]
    await buyers[0].http.delete(f"/api/orders/{first['id']}")
    await eventually(lambda: listed(seller, ticket["id"]))

    responses = await asyncio.gather(*(b.order(ticket["id"]) for b in buyers))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [400] * 49
    winner = next(r.json() for r in responses if r.status_code == 201)
    assert all(
        r.json() == {"errors": [{"message": "Ticket is already reserved"}]}
        for r in responses
        if r.status_code == 400
    )

    async def held_by_winner():
        shown = (await seller.get(f"/api/tickets/{ticket['id']}")).json()
        return shown.get("orderId") == winner["id"]

    await eventually(held_by_winner)


async def _not(awaitable):
    return not await awaitable

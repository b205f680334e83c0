"""GET /api/orders (the original's index.test)."""

from bson import ObjectId

URL = "/api/orders"


async def test_fetches_orders_for_a_particular_user(client, signin, new_ticket):
    ticket_one = await new_ticket(title="one", price=10)
    ticket_two = await new_ticket(title="two", price=20)
    ticket_three = await new_ticket(title="three", price=30)
    user_one = signin(str(ObjectId()))
    user_two_id = str(ObjectId())
    user_two = signin(user_two_id)

    # One order as user #1, two as user #2.
    await client.post(URL, json={"ticketId": str(ticket_one["_id"])}, headers=user_one)
    order_one = (
        await client.post(URL, json={"ticketId": str(ticket_two["_id"])}, headers=user_two)
    ).json()
    order_two = (
        await client.post(URL, json={"ticketId": str(ticket_three["_id"])}, headers=user_two)
    ).json()

    response = await client.get(URL, headers=user_two)

    assert response.status_code == 200
    orders = response.json()
    # Newest first; each with the replica's ticket embedded.
    assert [o["id"] for o in orders] == [order_two["id"], order_one["id"]]
    assert orders[0]["ticket"] == {
        "id": str(ticket_three["_id"]),
        "title": "three",
        "price": 30,
        "version": 0,
    }
    assert orders[1]["ticket"]["id"] == str(ticket_two["_id"])
    assert all(o["userId"] == user_two_id for o in orders)
    assert orders == [order_two, order_one]


async def test_lists_every_status_with_the_current_ticket(client, signin, new_ticket, db):
    user = signin()
    tickets = [await new_ticket(title=f"t{i}") for i in range(3)]
    ids = []
    for ticket in tickets:
        response = await client.post(URL, json={"ticketId": str(ticket["_id"])}, headers=user)
        ids.append(response.json()["id"])
    await client.delete(f"{URL}/{ids[0]}", headers=user)
    await db["orders"].update_one({"_id": ObjectId(ids[1])}, {"$set": {"status": "complete"}})
    # The replica moves on: the order shows the ticket as it is now, not as it was.
    await db["tickets"].update_one(
        {"_id": tickets[2]["_id"]}, {"$set": {"title": "renamed", "price": 99, "version": 1}}
    )

    orders = (await client.get(URL, headers=user)).json()

    assert [(o["id"], o["status"]) for o in orders] == [
        (ids[2], "created"),
        (ids[1], "complete"),
        (ids[0], "cancelled"),
    ]
    assert orders[0]["ticket"] == {
        "id": str(tickets[2]["_id"]),
        "title": "renamed",
        "price": 99,
        "version": 1,
    }


async def test_a_user_without_orders_gets_an_empty_list(client, signin):
    response = await client.get(URL, headers=signin())
    assert response.status_code == 200
    assert response.json() == []

"""GET /api/tickets/{id} (the original's show.test.ts)."""

from bson import ObjectId

TICKETS = "/api/tickets"


async def test_returns_a_404_if_the_ticket_is_not_found(client):
    response = await client.get(f"{TICKETS}/{ObjectId()}")
    assert response.status_code == 404
    assert response.json() == {"errors": [{"message": "Not Found"}]}


async def test_a_malformed_id_is_a_404_too(client):
    for bad in ("not-an-id", "123", "zzzzzzzzzzzzzzzzzzzzzzzz", "6a" * 13):
        response = await client.get(f"{TICKETS}/{bad}")
        assert response.status_code == 404, bad
        assert response.json() == {"errors": [{"message": "Not Found"}]}


async def test_returns_the_ticket_if_the_ticket_is_found(client, new_ticket):
    ticket = await new_ticket(title="concert", price=20)
    response = await client.get(f"{TICKETS}/{ticket['id']}")
    assert response.status_code == 200
    assert response.json() == ticket
    assert response.json()["title"] == "concert"
    assert response.json()["price"] == 20


async def test_a_reserved_ticket_shows_its_order_id(client, new_ticket, db):
    ticket = await new_ticket()
    order_id = str(ObjectId())
    await db["tickets"].update_one({"_id": ObjectId(ticket["id"])}, {"$set": {"orderId": order_id}})
    response = await client.get(f"{TICKETS}/{ticket['id']}")
    assert response.json() == {**ticket, "orderId": order_id}


async def test_methods_and_paths_not_served_are_404(client, new_ticket, signin):
    ticket = await new_ticket()
    for method, path in (
        ("PATCH", f"{TICKETS}/{ticket['id']}"),
        ("DELETE", f"{TICKETS}/{ticket['id']}"),
        ("POST", f"{TICKETS}/{ticket['id']}"),
        ("GET", f"{TICKETS}/{ticket['id']}/extra"),
        ("PUT", TICKETS),
    ):
        response = await client.request(method, path, json={}, headers=signin())
        assert response.status_code == 404, (method, path)
        assert response.json() == {"errors": [{"message": "Not Found"}]}

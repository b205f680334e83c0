"""GET /api/orders/{id} (the original's show.test)."""

import pytest
from bson import ObjectId

URL = "/api/orders"


async def test_fetches_the_order(client, signin, new_ticket):
    ticket = await new_ticket(title="concert", price=20)
    user = signin()
    order = (await client.post(URL, json={"ticketId": str(ticket["_id"])}, headers=user)).json()

    response = await client.get(f"{URL}/{order['id']}", headers=user)

    assert response.status_code == 200
    assert response.json() == order
    assert response.json()["ticket"]["id"] == str(ticket["_id"])


async def test_returns_an_error_if_one_user_tries_to_fetch_another_users_order(
    client, signin, new_ticket
):
    ticket = await new_ticket()
    order = (await client.post(URL, json={"ticketId": str(ticket["_id"])}, headers=signin())).json()

    response = await client.get(f"{URL}/{order['id']}", headers=signin())

    assert response.status_code == 401
    assert response.json() == {"errors": [{"message": "Not authorized"}]}


@pytest.mark.parametrize("order_id", [str(ObjectId()), "not-an-id", "a" * 23, "z" * 24])
async def test_an_unknown_or_malformed_id_is_not_found(client, signin, order_id):
    response = await client.get(f"{URL}/{order_id}", headers=signin())
    assert response.status_code == 404
    assert response.json() == {"errors": [{"message": "Not Found"}]}

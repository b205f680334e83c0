"""POST /api/orders (the original's new.test), plus validation and the one-winner rule."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from ticketing_testing import eventually

URL = "/api/orders"
RESERVED = {"errors": [{"message": "Ticket is already reserved"}]}


async def test_returns_an_error_if_the_ticket_does_not_exist(client, signin):
    response = await client.post(URL, json={"ticketId": str(ObjectId())}, headers=signin())
    assert response.status_code == 404
    assert response.json() == {"errors": [{"message": "Not Found"}]}


@pytest.mark.parametrize("status", ["created", "awaiting:payment", "complete"])
async def test_returns_an_error_if_the_ticket_is_already_reserved(
    client, signin, new_ticket, db, status
):
    ticket = await new_ticket()
    first = await client.post(URL, json={"ticketId": str(ticket["_id"])}, headers=signin())
    assert first.status_code == 201
    await db["orders"].update_one(
        {"_id": ObjectId(first.json()["id"])}, {"$set": {"status": status}}
    )

    response = await client.post(URL, json={"ticketId": str(ticket["_id"])}, headers=signin())
    assert response.status_code == 400
    assert response.json() == RESERVED


async def test_reserves_a_ticket(client, signin, new_ticket, db):
    ticket = await new_ticket(title="concert", price=20)
    user_id = str(ObjectId())
    before = datetime.now(UTC)

    response = await client.post(
        URL, json={"ticketId": str(ticket["_id"])}, headers=signin(user_id)
    )

    assert response.status_code == 201
    order = response.json()
    assert set(order) == {
        "id",
        "userId",
        "status",
        "expiresAt",
        "version",
        "price",
        "refunded",
        "ticket",
    }
    assert (order["price"], order["refunded"]) == (20, False)
    assert order["userId"] == user_id
    assert order["status"] == "created"
    assert order["version"] == 0
    assert order["ticket"] == {
        "id": str(ticket["_id"]),
        "title": "concert",
        "price": 20,
        "version": 0,
    }
    expires_at = datetime.fromisoformat(order["expiresAt"])
    assert expires_at >= before + timedelta(seconds=900) - timedelta(milliseconds=1)
    assert order["expiresAt"].endswith("Z")
    assert await db["orders"].count_documents({}) == 1


async def test_expiry_follows_the_expiration_window(start, signin, new_ticket):
    ticket = await new_ticket()
    async with start(expiration_window_seconds=60) as client:
        before = datetime.now(UTC)
        response = await client.post(URL, json={"ticketId": str(ticket["_id"])}, headers=signin())
    expires_at = datetime.fromisoformat(response.json()["expiresAt"])
    assert before + timedelta(seconds=59) <= expires_at <= before + timedelta(seconds=120)


async def test_emits_an_order_created_event(client, signin, new_ticket, published):
    ticket = await new_ticket(price=35.5)
    user_id = str(ObjectId())
    response = await client.post(
        URL, json={"ticketId": str(ticket["_id"])}, headers=signin(user_id)
    )
    order = response.json()

    (event,) = await eventually(lambda: published("order.created"))

    assert set(event) == {"id", "version", "status", "userId", "expiresAt", "ticket"}
    assert event["id"] == order["id"]
    assert event["version"] == 0
    assert event["status"] == "created"
    assert event["userId"] == user_id
    assert datetime.fromisoformat(event["expiresAt"]) == datetime.fromisoformat(order["expiresAt"])
    assert event["ticket"] == {"id": str(ticket["_id"]), "price": 35.5}


# Every malformed ticket id is checked without a server (unit/test_schemas.py); here, that the
# route answers the rule's message and field.
@pytest.mark.parametrize("body", [{}, {"ticketId": "abc"}])
async def test_ticket_id_must_be_an_object_id(client, signin, body):
    response = await client.post(URL, json=body, headers=signin())
    assert response.status_code == 400
    assert response.json() == {
        "errors": [{"message": "TicketId must be provided", "field": "ticketId"}]
    }


@pytest.mark.parametrize("content", [b"[]", b'"x"', b"not json", b""])
async def test_a_body_that_is_not_an_object_is_a_400(client, signin, content):
    headers = {**signin(), "content-type": "application/json"}
    response = await client.post(URL, content=content, headers=headers)
    assert response.status_code == 400
    assert response.json()["errors"]


async def test_one_winner_among_fifty_concurrent_orders_for_one_ticket(
    client, signin, new_ticket, db, published
):
    rounds = 10
    for _ in range(rounds):
        ticket = await new_ticket()
        body = {"ticketId": str(ticket["_id"])}
        responses = await asyncio.gather(
            *(client.post(URL, json=body, headers=signin()) for _ in range(50))
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201] + [400] * 49
        assert all(r.json() == RESERVED for r in responses if r.status_code == 400)
        # (Filtered here: the embedded server cannot match a non-_id field holding an ObjectId.)
        held = [o async for o in db["orders"].find() if o["ticketId"] == ticket["_id"]]
        assert len(held) == 1

    created = await eventually(lambda: _at_least(published("order.created"), rounds))
    assert len(created) == rounds


async def _at_least(pending, count):
    found = await pending
    return found if len(found) >= count else None


async def test_a_cancelled_order_frees_the_ticket(client, signin, new_ticket):
    ticket = await new_ticket()
    body = {"ticketId": str(ticket["_id"])}
    first_user = signin()
    first = await client.post(URL, json=body, headers=first_user)
    assert (await client.post(URL, json=body, headers=signin())).status_code == 400

    cancel = await client.delete(f"{URL}/{first.json()['id']}", headers=first_user)
    assert cancel.status_code == 204

    again = await client.post(URL, json=body, headers=signin())
    assert again.status_code == 201
    assert again.json()["status"] == "created"
    # ...and now the new order holds it.
    assert (await client.post(URL, json=body, headers=first_user)).json() == RESERVED

"""PUT /api/tickets/{id} (the original's update.test.ts, plus check order and concurrency)."""

import asyncio

import pytest
from bson import ObjectId

from ticketing_testing import eventually

TICKETS = "/api/tickets"
VALID = {"title": "new title", "price": 100}
PRICE_ERROR = {"message": "Price must be provided and must be greater than 0", "field": "price"}
TITLE_ERROR = {"message": "Title is required", "field": "title"}
RESERVED = {"errors": [{"message": "Cannot edit a reserved ticket"}]}
NOT_AUTHORIZED = {"errors": [{"message": "Not authorized"}]}
NOT_FOUND = {"errors": [{"message": "Not Found"}]}


async def reserve(db, ticket):
    await db["tickets"].update_one(
        {"_id": ObjectId(ticket["id"])}, {"$set": {"orderId": str(ObjectId())}}
    )


async def test_returns_a_404_if_the_provided_id_does_not_exist(client, signin):
    response = await client.put(f"{TICKETS}/{ObjectId()}", json=VALID, headers=signin())
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


async def test_a_malformed_id_is_a_404(client, signin):
    response = await client.put(f"{TICKETS}/not-an-id", json=VALID, headers=signin())
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


async def test_returns_a_401_if_the_user_is_not_authenticated(client, new_ticket):
    ticket = await new_ticket()
    response = await client.put(f"{TICKETS}/{ticket['id']}", json=VALID)
    assert response.status_code == 401
    assert response.json() == NOT_AUTHORIZED


async def test_returns_a_401_if_the_user_does_not_own_the_ticket(client, new_ticket, signin):
    ticket = await new_ticket(title="concert", price=20)
    response = await client.put(f"{TICKETS}/{ticket['id']}", json=VALID, headers=signin())
    assert response.status_code == 401
    assert response.json() == NOT_AUTHORIZED
    unchanged = (await client.get(f"{TICKETS}/{ticket['id']}")).json()
    assert unchanged == ticket


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"title": "", "price": 20}, [TITLE_ERROR]),
        ({"title": "   ", "price": 20}, [TITLE_ERROR]),
        ({"price": 20}, [TITLE_ERROR]),
        ({"title": "x" * 201, "price": 20}, [TITLE_ERROR]),
        ({"title": "concert", "price": -10}, [PRICE_ERROR]),
        ({"title": "concert", "price": 0}, [PRICE_ERROR]),
        ({"title": "concert", "price": "abc"}, [PRICE_ERROR]),
        ({"title": "concert", "price": True}, [PRICE_ERROR]),
        ({"title": "concert", "price": 1.234}, [PRICE_ERROR]),
        ({"title": "concert"}, [PRICE_ERROR]),
        ({}, [TITLE_ERROR, PRICE_ERROR]),
    ],
)
async def test_returns_a_400_if_the_user_provides_an_invalid_title_or_price(
    client, new_ticket, signin, body, errors
):
    owner = signin()
    ticket = await new_ticket(headers=owner)
    response = await client.put(f"{TICKETS}/{ticket['id']}", json=body, headers=owner)
    assert response.status_code == 400
    assert response.json() == {"errors": errors}


async def test_updates_the_ticket_provided_valid_inputs(client, new_ticket, signin):
    owner = signin()
    ticket = await new_ticket(headers=owner)
    response = await client.put(
        f"{TICKETS}/{ticket['id']}", json={"title": " new title ", "price": "100"}, headers=owner
    )
    assert response.status_code == 200
    expected = {**ticket, "title": "new title", "price": 100, "version": 1}
    assert response.json() == expected
    assert (await client.get(f"{TICKETS}/{ticket['id']}")).json() == expected


async def test_increments_the_version_on_every_edit(client, new_ticket, signin):
    owner = signin()
    ticket = await new_ticket(headers=owner)
    for version in (1, 2, 3):
        response = await client.put(
            f"{TICKETS}/{ticket['id']}", json={"title": f"v{version}", "price": 10}, headers=owner
        )
        assert response.json()["version"] == version


async def test_publishes_an_event(client, new_ticket, signin, published):
    owner = signin()
    ticket = await new_ticket(headers=owner)
    await client.put(f"{TICKETS}/{ticket['id']}", json=VALID, headers=owner)
    events = await eventually(lambda: published("ticket.updated"))
    assert events == [
        {
            "id": ticket["id"],
            "version": 1,
            "title": "new title",
            "price": 100,
            "userId": ticket["userId"],
        }
    ]


async def test_rejects_updates_if_the_ticket_is_reserved(client, new_ticket, signin, db):
    owner = signin()
    ticket = await new_ticket(headers=owner)
    await reserve(db, ticket)
    response = await client.put(f"{TICKETS}/{ticket['id']}", json=VALID, headers=owner)
    assert response.status_code == 400
    assert response.json() == RESERVED


async def test_checks_in_spec_order(client, new_ticket, signin, db):
    owner, stranger = signin(), signin()
    unknown = f"{TICKETS}/{ObjectId()}"
    # 401 signed out comes before validation and before the look-up.
    assert (await client.put(unknown, json={})).status_code == 401
    # 400 validation comes before the look-up.
    invalid = await client.put(unknown, json={"title": ""}, headers=stranger)
    assert invalid.status_code == 400
    assert invalid.json() == {"errors": [TITLE_ERROR, PRICE_ERROR]}
    invalid = await client.put(f"{TICKETS}/not-an-id", json={}, headers=stranger)
    assert invalid.status_code == 400
    # 404 comes before the ownership check.
    assert (await client.put(unknown, json=VALID, headers=stranger)).status_code == 404
    # 400 reserved comes before 401 not the owner.
    ticket = await new_ticket(headers=owner)
    await reserve(db, ticket)
    refused = await client.put(f"{TICKETS}/{ticket['id']}", json=VALID, headers=stranger)
    assert refused.status_code == 400
    assert refused.json() == RESERVED
    free = await new_ticket(headers=owner)
    refused = await client.put(f"{TICKETS}/{free['id']}", json=VALID, headers=stranger)
    assert refused.status_code == 401


async def test_concurrent_edits_by_the_owner_all_succeed_one_after_another(
    client, new_ticket, signin, published
):
    owner = signin()
    ticket = await new_ticket(headers=owner)
    url = f"{TICKETS}/{ticket['id']}"
    responses = await asyncio.gather(
        *(client.put(url, json={"title": f"edit {i}", "price": 10 + i}, headers=owner)
          for i in range(10))
    )  # fmt: skip
    assert [r.status_code for r in responses] == [200] * 10
    assert sorted(r.json()["version"] for r in responses) == list(range(1, 11))
    final = (await client.get(url)).json()
    assert final["version"] == 10
    last = next(r.json() for r in responses if r.json()["version"] == 10)
    assert final == last

    async def all_published():
        events = await published("ticket.updated")
        return events if len(events) >= 10 else None

    events = await eventually(all_published)
    assert sorted(e["version"] for e in events) == list(range(1, 11))
    by_version = {e["version"]: e for e in events}
    assert by_version[10]["title"] == final["title"]


async def test_an_edit_racing_a_reservation_loses_neither(
    client, new_ticket, signin, publish, published, order_created
):
    owner = signin()
    ticket = await new_ticket(headers=owner)
    url = f"{TICKETS}/{ticket['id']}"
    order = order_created(ticket)
    edits = [client.put(url, json={"title": f"edit {i}", "price": 10}, headers=owner)
             for i in range(5)]  # fmt: skip
    results = await asyncio.gather(publish(order), *edits)
    responses = results[1:]
    assert {r.status_code for r in responses} <= {200, 400}
    done = [r.json() for r in responses if r.status_code == 200]

    async def reserved():
        current = (await client.get(url)).json()
        return current if current.get("orderId") == order.id else None

    final = await eventually(reserved)
    assert final["version"] == len(done) + 1  # every edit and the reservation, each once
    if done:
        assert final["title"] == max(done, key=lambda t: t["version"])["title"]

    async def all_published():
        events = await published("ticket.updated")
        return events if len(events) == final["version"] else None

    events = await eventually(all_published)
    assert sorted(e["version"] for e in events) == list(range(1, final["version"] + 1))

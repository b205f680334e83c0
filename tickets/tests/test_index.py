"""GET /api/tickets (the original's index.test.ts, plus reserved tickets, order and paging)."""

import pytest
from bson import ObjectId

from ticketing_testing import eventually

TICKETS = "/api/tickets"
OFFSET_RULE = {"message": "Offset must be between 0 and 10000", "field": "offset"}


async def test_can_fetch_a_list_of_tickets(client, new_ticket):
    for title in ("one", "two", "three"):
        await new_ticket(title=title)
    response = await client.get(TICKETS)
    assert response.status_code == 200
    assert len(response.json()) == 3


async def test_needs_no_sign_in_and_lists_nothing_at_first(client):
    response = await client.get(TICKETS)
    assert response.status_code == 200
    assert response.json() == []


async def test_lists_newest_first_in_the_api_shape(client, new_ticket):
    made = [await new_ticket(title=title) for title in ("one", "two", "three")]
    response = await client.get(TICKETS)
    assert response.json() == list(reversed(made))


async def test_reserved_tickets_are_not_listed(client, new_ticket, publish, acked, order_created):
    free = await new_ticket(title="free")
    held = await new_ticket(title="held")
    seq = await publish(order_created(held))
    await eventually(lambda: acked("order.created", seq))
    response = await client.get(TICKETS)
    assert response.json() == [free]


async def test_limit_and_offset_page_through_the_list(client, new_ticket):
    made = [await new_ticket(title=f"t{i}") for i in range(5)]
    newest_first = list(reversed(made))
    page = await client.get(TICKETS, params={"limit": 2, "offset": 1})
    assert page.status_code == 200
    assert page.json() == newest_first[1:3]
    assert (await client.get(TICKETS, params={"limit": 100})).json() == newest_first
    assert (await client.get(TICKETS, params={"offset": 4})).json() == newest_first[4:]
    assert (await client.get(TICKETS, params={"offset": 5})).json() == []


async def test_the_default_limit_is_100(client, db):
    ids = [ObjectId() for _ in range(101)]
    docs = [
        {
            "_id": oid,
            "title": "t",
            "price": 1.0,
            "userId": "u",
            "version": 0,
            "rev": 0,
            "listing": str(oid),
        }
        for oid in ids
    ]  # fmt: skip  (as the service stores an open ticket)
    await db["tickets"].insert_many(docs)
    assert len((await client.get(TICKETS)).json()) == 100


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5", ""])
async def test_a_limit_out_of_range_is_a_400(client, limit):
    response = await client.get(TICKETS, params={"limit": limit})
    assert response.status_code == 400
    assert response.json() == {
        "errors": [{"message": "Limit must be between 1 and 100", "field": "limit"}]
    }


@pytest.mark.parametrize("offset", ["-1", "abc", "0.5"])
async def test_a_negative_offset_is_a_400(client, offset):
    response = await client.get(TICKETS, params={"offset": offset})
    assert response.status_code == 400
    assert response.json() == {"errors": [OFFSET_RULE]}


@pytest.mark.parametrize("offset", ["10001", str(2**63), str(2**64), "9" * 40])
async def test_an_offset_beyond_its_maximum_is_a_400(client, offset):
    response = await client.get(TICKETS, params={"offset": offset})
    assert response.status_code == 400
    assert response.json() == {"errors": [OFFSET_RULE]}


async def test_the_largest_offset_is_an_empty_page(client, new_ticket):
    await new_ticket()
    response = await client.get(TICKETS, params={"offset": "10000"})
    assert response.status_code == 200
    assert response.json() == []


@pytest.mark.parametrize("limit", [str(2**63), str(2**64)])
async def test_a_limit_the_database_cannot_take_is_a_400(client, limit):
    response = await client.get(TICKETS, params={"limit": limit})
    assert response.status_code == 400
    assert response.json() == {
        "errors": [{"message": "Limit must be between 1 and 100", "field": "limit"}]
    }


async def test_both_out_of_range_lists_both(client):
    response = await client.get(TICKETS, params={"limit": 0, "offset": -1})
    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            {"message": "Limit must be between 1 and 100", "field": "limit"},
            OFFSET_RULE,
        ]
    }

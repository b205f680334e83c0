"""POST /api/tickets (the original's new.test.ts)."""

import pytest

from ticketing_testing import eventually, stream_messages

TICKETS = "/api/tickets"
TITLE_ERROR = {"message": "Title is required", "field": "title"}
PRICE_ERROR = {"message": "Price must be greater than 0", "field": "price"}


async def test_has_a_route_handler_listening_to_api_tickets_for_post_requests(client):
    response = await client.post(TICKETS, json={})
    assert response.status_code != 404


async def test_can_only_be_accessed_if_the_user_is_signed_in(client):
    response = await client.post(TICKETS, json={"title": "concert", "price": 20})
    assert response.status_code == 401
    assert response.json() == {"errors": [{"message": "Not authorized"}]}


async def test_returns_a_status_other_than_401_if_the_user_is_signed_in(client, signin):
    response = await client.post(TICKETS, json={}, headers=signin())
    assert response.status_code != 401


async def test_a_session_cookie_signs_in_too(client):
    from ticketing_common.sessions import encode_cookie, issue_token
    from ticketing_testing import TEST_JWT_KEY

    token = issue_token("6a0000000000000000000001", "a@test.com", TEST_JWT_KEY, 3600)
    client.cookies.set("session", encode_cookie(token))
    response = await client.post(TICKETS, json={"title": "concert", "price": 20})
    assert response.status_code == 201
    assert response.json()["userId"] == "6a0000000000000000000001"


@pytest.mark.parametrize("title", ["", "   ", None, 12, ["a"], "x" * 201])
async def test_returns_an_error_if_an_invalid_title_is_provided(client, signin, title):
    response = await client.post(TICKETS, json={"title": title, "price": 10}, headers=signin())
    assert response.status_code == 400
    assert response.json() == {"errors": [TITLE_ERROR]}


async def test_returns_an_error_if_the_title_is_missing(client, signin):
    response = await client.post(TICKETS, json={"price": 10}, headers=signin())
    assert response.status_code == 400
    assert response.json() == {"errors": [TITLE_ERROR]}


@pytest.mark.parametrize(
    "price",
    [-10, 0, "0", "abc", "", True, False, None, [1], {"a": 1}, "NaN", "Infinity", "-Infinity",
     "1e7", 1e7, 1_000_000.01, 1.234, "1.234"],
)  # fmt: skip
async def test_returns_an_error_if_an_invalid_price_is_provided(client, signin, price):
    body = {"title": "concert", "price": price}
    response = await client.post(TICKETS, json=body, headers=signin())
    assert response.status_code == 400, price
    assert response.json() == {"errors": [PRICE_ERROR]}


async def test_returns_an_error_if_the_price_is_missing(client, signin):
    response = await client.post(TICKETS, json={"title": "concert"}, headers=signin())
    assert response.status_code == 400
    assert response.json() == {"errors": [PRICE_ERROR]}


async def test_lists_every_failed_rule(client, signin):
    response = await client.post(TICKETS, json={}, headers=signin())
    assert response.status_code == 400
    assert response.json() == {"errors": [TITLE_ERROR, PRICE_ERROR]}


async def test_a_body_that_is_not_a_json_object_is_a_400(client, signin):
    for content in (b"[1, 2]", b"not json", b'"text"'):
        response = await client.post(
            TICKETS,
            content=content,
            headers={**signin(), "content-type": "application/json"},
        )
        assert response.status_code == 400
        assert response.json() == {"errors": [{"message": "Request body must be a JSON object"}]}


@pytest.mark.parametrize("price", [20, 20.5, "20", " 19.99 ", 1_000_000, 0.01])
async def test_accepts_numbers_and_numeric_strings_up_to_two_decimals(client, signin, price):
    body = {"title": "concert", "price": price}
    response = await client.post(TICKETS, json=body, headers=signin())
    assert response.status_code == 201
    assert response.json()["price"] == float(str(price).strip())


async def test_creates_a_ticket_with_valid_inputs(client, signin, db):
    assert await db["tickets"].count_documents({}) == 0
    user_id = "6a0000000000000000000abc"
    response = await client.post(
        TICKETS, json={"title": "  concert  ", "price": 20}, headers=signin(user_id)
    )
    assert response.status_code == 201
    ticket = response.json()
    assert set(ticket) == {"id", "title", "price", "userId", "version"}
    assert ticket["title"] == "concert"
    assert ticket["price"] == 20
    assert ticket["userId"] == user_id
    assert ticket["version"] == 0
    stored = await db["tickets"].find({}).to_list()
    assert len(stored) == 1
    assert stored[0]["title"] == "concert"
    assert stored[0]["price"] == 20


async def test_publishes_an_event(client, signin, bus):
    user_id = "6a0000000000000000000abc"
    response = await client.post(
        TICKETS, json={"title": "concert", "price": "20.50"}, headers=signin(user_id)
    )
    ticket = response.json()
    events = await eventually(lambda: stream_messages(bus, "ticket.created"))
    assert len(events) == 1
    assert events[0]["data"] == {
        "id": ticket["id"],
        "version": 0,
        "title": "concert",
        "price": 20.5,
        "userId": user_id,
    }
    assert events[0]["msgId"]


async def test_the_event_leaves_through_the_outbox(client, signin, db, published):
    await client.post(TICKETS, json={"title": "concert", "price": 20}, headers=signin())
    await eventually(lambda: published("ticket.created"))

    async def outbox_emptied():
        return await db["tickets"].count_documents({"outbox": {"$exists": True}}) == 0

    await eventually(outbox_emptied)

"""Every route needs a signed-in user, and says so before it looks at anything else."""

import pytest
from bson import ObjectId

from ticketing_common.sessions import encode_cookie, issue_token
from ticketing_testing import TEST_JWT_KEY

URL = "/api/orders"
UNAUTHORIZED = {"errors": [{"message": "Not authorized"}]}
ROUTES = [
    ("POST", URL, {"ticketId": str(ObjectId())}),
    ("POST", URL, {}),  # 401 comes before validation
    ("GET", URL, None),
    ("GET", f"{URL}/{ObjectId()}", None),
    ("GET", f"{URL}/not-an-id", None),
    ("DELETE", f"{URL}/{ObjectId()}", None),
]


@pytest.mark.parametrize(("method", "url", "body"), ROUTES)
async def test_signed_out_is_a_401(client, method, url, body):
    response = await client.request(method, url, json=body)
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


@pytest.mark.parametrize(("method", "url", "body"), ROUTES)
async def test_a_token_signed_with_another_key_is_a_401(client, method, url, body):
    token = issue_token(str(ObjectId()), "a@test.com", "some-other-key-long-enough-for-hs256", 60)
    response = await client.request(
        method, url, json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401


async def test_the_session_cookie_signs_in_too(client, new_ticket):
    ticket = await new_ticket()
    cookie = encode_cookie(issue_token(str(ObjectId()), "a@test.com", TEST_JWT_KEY, 60))
    client.cookies.set("session", cookie)
    response = await client.post(URL, json={"ticketId": str(ticket["_id"])})
    assert response.status_code == 201


async def test_an_unserved_method_is_not_found(client, signin):
    response = await client.patch(f"{URL}/{ObjectId()}", json={}, headers=signin())
    assert response.status_code == 404
    assert response.json() == {"errors": [{"message": "Not Found"}]}

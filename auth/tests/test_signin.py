import asyncio

import pytest

SIGNIN = "/api/users/signin"
INVALID = {"errors": [{"message": "Invalid credentials"}]}


@pytest.fixture
async def user(client):
    response = await client.post(
        "/api/users/signup", json={"email": "test@test.com", "password": "password"}
    )
    assert response.status_code == 201
    client.cookies.clear()
    return response.json()


async def test_fails_when_an_email_that_does_not_exist_is_supplied(client):
    response = await client.post(SIGNIN, json={"email": "test@test.com", "password": "password"})
    assert response.status_code == 400
    assert response.json() == INVALID


async def test_fails_when_an_incorrect_password_is_supplied(client, user):
    response = await client.post(SIGNIN, json={"email": "test@test.com", "password": "wrong"})
    assert response.status_code == 400
    assert response.json() == INVALID
    assert "set-cookie" not in response.headers


async def test_responds_with_a_cookie_when_given_valid_credentials(client, user):
    response = await client.post(SIGNIN, json={"email": " Test@Test.com", "password": "password "})
    assert response.status_code == 200
    assert response.json() == user
    assert response.headers["set-cookie"].startswith("session=")


async def test_validation_messages(client):
    response = await client.post(SIGNIN, json={"email": "nope", "password": "   "})
    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            {"message": "Email must be valid", "field": "email"},
            {"message": "You must supply a password", "field": "password"},
        ]
    }


async def test_ten_failures_lock_the_email_even_for_the_right_password(client, user):
    for _ in range(10):
        wrong = await client.post(SIGNIN, json={"email": "test@test.com", "password": "wrong"})
        assert wrong.status_code == 400
    right = await client.post(SIGNIN, json={"email": "test@test.com", "password": "password"})
    assert right.status_code == 429
    assert right.json() == {"errors": [{"message": "Too many requests"}]}
    other = await client.post(SIGNIN, json={"email": "other@test.com", "password": "password"})
    assert other.status_code == 400


async def test_unknown_emails_are_locked_too(client):
    failures = [
        await client.post(SIGNIN, json={"email": "ghost@test.com", "password": "guess"})
        for _ in range(10)
    ]
    assert {r.status_code for r in failures} == {400}
    locked = await client.post(SIGNIN, json={"email": "GHOST@test.com", "password": "guess"})
    assert locked.status_code == 429


async def test_the_lock_ends_when_the_window_has_passed(start):
    async with start(signin_max_failures=2, signin_window_seconds=1) as http:
        await http.post("/api/users/signup", json={"email": "w@test.com", "password": "password"})
        for _ in range(2):
            await http.post(SIGNIN, json={"email": "w@test.com", "password": "wrong"})
        locked = await http.post(SIGNIN, json={"email": "w@test.com", "password": "password"})
        assert locked.status_code == 429
        await asyncio.sleep(1.2)
        again = await http.post(SIGNIN, json={"email": "w@test.com", "password": "password"})
        assert again.status_code == 200

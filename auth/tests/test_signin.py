import asyncio

import pytest

from ticketing_auth.passwords import Passwords

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


async def test_concurrent_wrong_passwords_get_at_most_ten_evaluated(client, user, monkeypatch):
    """30 wrong passwords at once: each is held at the password check until every one of them
    has either reached it or been answered, so all 30 are in flight together; no more than 10
    may be checked, the rest are 429."""
    burst = 30
    reached = 0
    gate = asyncio.Event()
    all_in = asyncio.Event()
    verify = Passwords.verify

    async def held_verify(self, password, password_hash):
        nonlocal reached
        reached += 1
        progress()
        await gate.wait()
        return await verify(self, password, password_hash)

    def progress(*_):
        if reached + sum(task.done() for task in tasks) >= burst:
            all_in.set()

    monkeypatch.setattr(Passwords, "verify", held_verify)
    body = {"email": "test@test.com", "password": "wrong"}
    tasks = [asyncio.create_task(client.post(SIGNIN, json=body)) for _ in range(burst)]
    for task in tasks:
        task.add_done_callback(progress)
    await all_in.wait()
    gate.set()
    statuses = [response.status_code for response in await asyncio.gather(*tasks)]
    evaluated = reached
    assert evaluated <= 10
    assert statuses.count(400) == evaluated
    assert statuses.count(429) == burst - evaluated
    # Only the evaluated ones are failures: the right password is locked out only at 10.
    monkeypatch.undo()
    right = await client.post(SIGNIN, json={"email": "test@test.com", "password": "password"})
    assert right.status_code == (429 if evaluated == 10 else 200)


async def test_a_right_password_is_not_counted_as_a_failure(client, user):
    for _ in range(9):
        wrong = await client.post(SIGNIN, json={"email": "test@test.com", "password": "wrong"})
        assert wrong.status_code == 400
    for _ in range(3):
        right = await client.post(SIGNIN, json={"email": "test@test.com", "password": "password"})
        assert right.status_code == 200
    last = await client.post(SIGNIN, json={"email": "test@test.com", "password": "wrong"})
    assert last.status_code == 400
    locked = await client.post(SIGNIN, json={"email": "test@test.com", "password": "password"})
    assert locked.status_code == 429

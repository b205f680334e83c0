import asyncio
import math
import threading
from datetime import UTC, datetime, timedelta

import pytest
from pwdlib import PasswordHash

from ticketing_auth.passwords import Passwords
from ticketing_testing import eventually, serve

SIGNIN = "/api/users/signin"
INVALID = {"errors": [{"message": "Invalid credentials"}]}
TOO_MANY = {"errors": [{"message": "Too many requests"}]}
WINDOW = 900  # SIGNIN_WINDOW_SECONDS' default


def retry_after(response):
    """The response's `Retry-After`, checked to be whole seconds within one window."""
    seconds = int(response.headers["retry-after"])
    assert 1 <= seconds <= WINDOW
    return seconds


def stamp(seconds_ago, now):
    """A failure time as Mongo keeps it (milliseconds), `seconds_ago` before `now`."""
    at = now - timedelta(seconds=seconds_ago)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


async def fail_at(db, email, *seconds_ago):
    """Store failed sign-ins of `email` that happened that many seconds ago; their times."""
    now = datetime.now(UTC)
    times = [stamp(ago, now) for ago in seconds_ago]
    await db.signin_failures.insert_many([{"email": email, "at": at} for at in times])
    return times


async def signin_timed(client, body):
    """Sign in, with the clock read just before and just after: the server's `now` lies between."""
    before = datetime.now(UTC)
    response = await client.post(SIGNIN, json=body)
    return response, before, datetime.now(UTC)


def seconds_left(frees_at, before, after):
    """The Retry-After values the server may give for a lock ending at `frees_at`."""
    return range(
        math.ceil((frees_at - after).total_seconds()),
        math.ceil((frees_at - before).total_seconds()) + 1,
    )


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
    assert right.json() == TOO_MANY
    retry_after(right)
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


async def test_retry_after_says_when_the_oldest_counted_failure_leaves_the_window(client, db):
    """Stored failures with chosen times: the lock of each email ends when the window has
    passed over its tenth newest failure, and Retry-After counts the seconds until then."""
    cases = {
        "ten@test.com": (600, *range(100, 109)),  # the oldest leaves in 300 s
        "aged@test.com": (800, *range(100, 109)),  # the same lock, 200 s older: 100 s left
        "twelve@test.com": (890, 880, 700, *range(100, 109)),  # three must leave: 200 s left
    }
    for email, ages in cases.items():
        times = await fail_at(db, email, *ages)
        frees_at = sorted(times, reverse=True)[9] + timedelta(seconds=WINDOW)
        body = {"email": email, "password": "password"}
        locked, before, after = await signin_timed(client, body)
        assert locked.status_code == 429, email
        assert locked.json() == TOO_MANY
        assert retry_after(locked) in seconds_left(frees_at, before, after), email
    # The refused attempts were not counted: each email still has just what was stored.
    for email, ages in cases.items():
        assert await db.signin_failures.count_documents({"email": email}) == len(ages)


async def test_the_lock_ends_when_the_window_has_passed_over_the_oldest_failure(client, db):
    """Ten failures, the oldest just past the window: only nine count, the email is free."""
    await client.post("/api/users/signup", json={"email": "w@test.com", "password": "password"})
    await fail_at(db, "w@test.com", WINDOW + 5, *range(100, 109))
    free = await client.post(SIGNIN, json={"email": "w@test.com", "password": "password"})
    assert free.status_code == 200
    await fail_at(db, "w@test.com", WINDOW - 60)  # now ten in the window
    locked = await client.post(SIGNIN, json={"email": "w@test.com", "password": "password"})
    assert locked.status_code == 429
    assert retry_after(locked) <= 60


async def test_concurrent_wrong_passwords_get_at_most_ten_evaluated(client, user, monkeypatch):
    """50 wrong passwords at once: each is held at the password check until every one of them
    has either reached it or been answered, so all 50 are in flight together; the Argon2
    hasher itself counts the passwords evaluated: no more than 10, the rest are 429 with
    Retry-After."""
    burst = 50
    reached = 0
    evaluated: list[bool] = []  # one entry per Argon2 verify, appended in the hashing thread
    gate = asyncio.Event()
    all_in = asyncio.Event()
    verify = Passwords.verify
    argon2_verify = PasswordHash.verify

    async def held_verify(self, password, password_hash):
        nonlocal reached
        reached += 1
        progress()
        await gate.wait()
        return await verify(self, password, password_hash)

    def counted_verify(self, password, password_hash):
        evaluated.append(True)
        return argon2_verify(self, password, password_hash)

    def progress(*_):
        if reached + sum(task.done() for task in tasks) >= burst:
            all_in.set()

    monkeypatch.setattr(Passwords, "verify", held_verify)
    monkeypatch.setattr(PasswordHash, "verify", counted_verify)
    body = {"email": "test@test.com", "password": "wrong"}
    tasks = [asyncio.create_task(client.post(SIGNIN, json=body)) for _ in range(burst)]
    for task in tasks:
        task.add_done_callback(progress)
    await all_in.wait()
    gate.set()
    responses = await asyncio.gather(*tasks)
    statuses = [response.status_code for response in responses]
    assert len(evaluated) == reached <= 10
    assert statuses.count(400) == len(evaluated)
    assert statuses.count(429) == burst - len(evaluated)
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.json() == TOO_MANY
        retry_after(refused)
    # Only the evaluated ones are failures: the right password is locked out only at 10.
    monkeypatch.undo()
    right = await client.post(SIGNIN, json={"email": "test@test.com", "password": "password"})
    assert right.status_code == (429 if len(evaluated) == 10 else 200)


async def test_a_full_hash_queue_is_a_503_with_retry_after(service, settings, db, monkeypatch):
    """One hash at a time and one waiting: the first sign-in is held inside the real Argon2
    verify (so it holds the slot), the second waits in the queue, the third is refused at
    once with 503 and Retry-After, and is not counted as a failed sign-in."""
    app = service.build(settings.model_copy(update={"hash_concurrency": 1, "hash_queue": 1}))
    async with serve(app) as client:
        signup = {"email": "q@test.com", "password": "password"}
        assert (await client.post("/api/users/signup", json=signup)).status_code == 201
        client.cookies.clear()
        pool = app.state.runtime.context.passwords.pool
        loop = asyncio.get_running_loop()
        hashing = asyncio.Event()  # the first verify holds the only slot
        release = threading.Event()  # lets the held verify go on (it runs in a thread)
        argon2_verify = PasswordHash.verify

        def held_verify(self, password, password_hash):
            loop.call_soon_threadsafe(hashing.set)
            release.wait()
            return argon2_verify(self, password, password_hash)

        async def one_waiting():
            return pool.waiting == 1

        monkeypatch.setattr(PasswordHash, "verify", held_verify)
        try:
            wrong = asyncio.create_task(
                client.post(SIGNIN, json={"email": "q@test.com", "password": "wrong"})
            )
            await hashing.wait()
            queued = asyncio.create_task(client.post(SIGNIN, json=signup))
            await eventually(one_waiting)
            refused = await client.post(SIGNIN, json=signup)
            assert refused.status_code == 503
            assert refused.json() == {"errors": [{"message": "Service unavailable"}]}
            assert refused.headers["retry-after"] == "1"
            release.set()
            assert (await wrong).status_code == 400
            assert (await queued).status_code == 200
        finally:
            release.set()
        # Only the wrong password is a failure: the refused attempt was forgiven.
        assert await db.signin_failures.count_documents({"email": "q@test.com"}) == 1
        again = await client.post(SIGNIN, json=signup)
        assert again.status_code == 200


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

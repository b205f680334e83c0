"""auth's /metrics: each Argon2 hash (sign-up) and verify (sign-in) is timed, and only those."""

from ticketing_testing import scrape

USER = {"email": "metered@test.com", "password": "password"}


async def test_hashes_and_verifies_are_timed(client):
    assert (await scrape(client)).value("ticketing_argon2_hash_seconds_count") == 0
    assert (await client.post("/api/users/signup", json=USER)).status_code == 201
    assert (await client.post("/api/users/signin", json=USER)).status_code == 200
    wrong = {**USER, "password": "not it"}
    assert (await client.post("/api/users/signin", json=wrong)).status_code == 400
    found = await scrape(client)
    assert found.value("ticketing_argon2_hash_seconds_count", operation="hash") == 1
    assert found.value("ticketing_argon2_hash_seconds_count", operation="verify") == 2
    # The test's cheap cost takes about a millisecond; the sum is real time, not a count.
    assert 0 < found.value("ticketing_argon2_hash_seconds_sum") < 5
    signup = {"route": "/api/users/signup", "method": "POST", "status": "201"}
    assert found.value("ticketing_http_requests_total", **signup) == 1

import asyncio

SIGNUP = "/api/users/signup"


async def test_returns_201_on_successful_signup(client):
    response = await client.post(SIGNUP, json={"email": "test@test.com", "password": "password"})
    assert response.status_code == 201
    body = response.json()
    assert body["email"] == "test@test.com"
    assert len(body["id"]) == 24
    assert set(body) == {"id", "email"}


async def test_returns_400_with_an_invalid_email(client):
    response = await client.post(SIGNUP, json={"email": "alskdflaskjfd", "password": "password"})
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "Email must be valid", "field": "email"}]}


async def test_returns_400_with_an_invalid_password(client):
    for password in ("p", "p" * 21, "   ab   ", 1234, None):
        response = await client.post(SIGNUP, json={"email": "test@test.com", "password": password})
        assert response.status_code == 400, password
        assert response.json()["errors"] == [
            {"message": "Password must be between 4 and 20 characters", "field": "password"}
        ]


async def test_returns_400_with_missing_email_and_password(client):
    missing_password = await client.post(SIGNUP, json={"email": "test@test.com"})
    assert missing_password.status_code == 400
    missing_email = await client.post(SIGNUP, json={"password": "alskjdf"})
    assert missing_email.status_code == 400
    nothing = await client.post(SIGNUP, json={})
    assert nothing.json()["errors"] == [
        {"message": "Email must be valid", "field": "email"},
        {"message": "Password must be between 4 and 20 characters", "field": "password"},
    ]


async def test_a_body_that_is_not_a_json_object_is_a_400(client):
    for content in (b"[1, 2]", b"not json", b'"text"'):
        response = await client.post(
            SIGNUP, content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert response.json() == {"errors": [{"message": "Request body must be a JSON object"}]}


async def test_disallows_duplicate_emails(client):
    first = await client.post(SIGNUP, json={"email": "test@test.com", "password": "password"})
    assert first.status_code == 201
    again = await client.post(SIGNUP, json={"email": " TEST@test.com ", "password": "password"})
    assert again.status_code == 400
    assert again.json() == {"errors": [{"message": "Email in use"}]}


async def test_sets_a_cookie_after_successful_signup(client):
    response = await client.post(SIGNUP, json={"email": "test@test.com", "password": "password"})
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("session=ey")
    assert "Path=/" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


async def test_email_is_trimmed_and_stored_lower_cased(client):
    response = await client.post(SIGNUP, json={"email": "  Mixed@Case.COM ", "password": "pass"})
    assert response.json()["email"] == "mixed@case.com"


async def test_twenty_concurrent_signups_with_one_email_give_one_201(start):
    body = {"email": "race@test.com", "password": "password"}
    # A hash queue long enough for all 20: this is about the unique index, not the 503.
    async with start(hash_queue=20) as client:
        responses = await asyncio.gather(*(client.post(SIGNUP, json=body) for _ in range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [400] * 19
    assert all(
        r.json() == {"errors": [{"message": "Email in use"}]}
        for r in responses[1:]
        if r.status_code == 400
    )


async def test_only_an_argon2_hash_is_stored(client, db):
    response = await client.post(SIGNUP, json={"email": "hash@test.com", "password": "secret1"})
    assert "secret1" not in response.text
    stored = await db.users.find_one({"email": "hash@test.com"})
    assert stored["password"].startswith("$argon2id$")

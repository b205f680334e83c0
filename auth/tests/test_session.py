import base64
import json
import time

import jwt

from ticketing_common.sessions import encode_cookie
from ticketing_testing import TEST_JWT_KEY

CURRENT = "/api/users/currentuser"


async def _signup(client):
    response = await client.post(
        "/api/users/signup", json={"email": "test@test.com", "password": "password"}
    )
    assert response.status_code == 201
    return response


async def test_responds_with_details_about_the_current_user(client):
    await _signup(client)
    response = await client.get(CURRENT)
    assert response.status_code == 200
    current = response.json()["currentUser"]
    assert current["email"] == "test@test.com"
    assert current["exp"] - current["iat"] == 86400


async def test_responds_with_null_if_not_authenticated(client):
    response = await client.get(CURRENT)
    assert response.status_code == 200
    assert response.json() == {"currentUser": None}


async def test_clears_the_cookie_after_signing_out(client):
    await _signup(client)
    response = await client.post("/api/users/signout")
    assert response.status_code == 200
    assert response.json() == {}
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("session=;")
    assert "Expires=Thu, 01 Jan 1970 00:00:00 GMT" in cookie
    assert "Path=/" in cookie and "HttpOnly" in cookie
    assert (await client.get(CURRENT)).json() == {"currentUser": None}


async def test_the_cookie_holds_base64_json_with_the_jwt(client):
    response = await _signup(client)
    value = response.cookies["session"]
    token = json.loads(base64.b64decode(value))["jwt"]
    payload = jwt.decode(token, TEST_JWT_KEY, algorithms=["HS256"])
    assert payload["email"] == "test@test.com"
    assert set(payload) == {"id", "email", "iat", "exp"}


async def test_a_bearer_token_works_like_the_cookie(client):
    response = await _signup(client)
    token = json.loads(base64.b64decode(response.cookies["session"]))["jwt"]
    client.cookies.clear()
    current = await client.get(CURRENT, headers={"Authorization": f"Bearer {token}"})
    assert current.json()["currentUser"]["email"] == "test@test.com"


def _forge(payload, key, algorithm):
    return jwt.encode(payload, key, algorithm=algorithm)


async def test_forged_tokens_count_as_signed_out(client):
    now = int(time.time())
    claims = {"id": "a" * 24, "email": "evil@test.com", "iat": now, "exp": now + 600}
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = {
        "alg none": f"{header}.{body}.",
        "wrong key": _forge(claims, "another-key-that-is-long-enough-too", "HS256"),
        "HS384": _forge(claims, TEST_JWT_KEY * 2, "HS384"),
        "expired": _forge({**claims, "iat": now - 7200, "exp": now - 3600}, TEST_JWT_KEY, "HS256"),
        "no exp": _forge({k: v for k, v in claims.items() if k != "exp"}, TEST_JWT_KEY, "HS256"),
        "garbage": "not-a-token",
    }
    for name, token in forged.items():
        by_cookie = await client.get(CURRENT, headers={"Cookie": f"session={encode_cookie(token)}"})
        assert by_cookie.json() == {"currentUser": None}, name
        by_header = await client.get(CURRENT, headers={"Authorization": f"Bearer {token}"})
        assert by_header.json() == {"currentUser": None}, name
    broken_cookie = await client.get(CURRENT, headers={"Cookie": "session=%%%not-base64"})
    assert broken_cookie.json() == {"currentUser": None}


async def test_unknown_routes_and_methods_are_404(client):
    for method, path in (("GET", "/api/users/nothing"), ("PATCH", "/api/users/signup")):
        response = await client.request(method, path)
        assert response.status_code == 404
        assert response.json() == {"errors": [{"message": "Not Found"}]}


async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200


async def test_openapi_is_served_under_the_api_prefix(client):
    response = await client.get("/api/users/openapi.json")
    assert response.status_code == 200
    assert "/api/users/signup" in response.json()["paths"]
    assert (await client.get("/api/users/docs")).status_code == 200

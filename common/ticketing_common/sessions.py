"""Sessions: the `session` cookie and `Authorization: Bearer`, both carrying an HS256 JWT."""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Annotated

import jwt
from fastapi import Depends, Request, Response
from pydantic import BaseModel

from ticketing_common.errors import NotAuthorizedError
from ticketing_common.settings import SessionSettings, get_settings

COOKIE_NAME = "session"
ALGORITHM = "HS256"


class CurrentUser(BaseModel):
    id: str
    email: str
    iat: int
    exp: int


def issue_token(user_id: str, email: str, key: str, ttl_seconds: int) -> str:
    now = int(time.time())
    payload = {"id": user_id, "email": email, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(payload, key, algorithm=ALGORITHM)


def verify_token(token: str, key: str) -> CurrentUser | None:
    """The token's user, or None for any token we did not sign or that has expired."""
    try:
        payload = jwt.decode(
            token, key, algorithms=[ALGORITHM], options={"require": ["exp", "iat"]}
        )
        return CurrentUser.model_validate(payload)
    except (jwt.InvalidTokenError, ValueError):
        return None


def encode_cookie(token: str) -> str:
    return base64.b64encode(json.dumps({"jwt": token}).encode()).decode()


def decode_cookie(value: str) -> str | None:
    try:
        data = json.loads(base64.b64decode(value.strip('"'), validate=True))
    except (binascii.Error, ValueError):
        return None
    token = data.get("jwt") if isinstance(data, dict) else None
    return token if isinstance(token, str) else None


def _cookie_header(value: str, *, secure: bool, expired: bool = False) -> str:
    # Written by hand: http.cookies would quote the base64 value, which the original never did.
    parts = [f"{COOKIE_NAME}={value}", "Path=/"]
    if expired:
        parts += ["Expires=Thu, 01 Jan 1970 00:00:00 GMT", "Max-Age=0"]
    parts += ["HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def set_session(response: Response, token: str, *, secure: bool) -> None:
    response.headers.append("set-cookie", _cookie_header(encode_cookie(token), secure=secure))


def clear_session(response: Response, *, secure: bool) -> None:
    response.headers.append("set-cookie", _cookie_header("", secure=secure, expired=True))


def request_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    cookie = request.cookies.get(COOKIE_NAME)
    return decode_cookie(cookie) if cookie else None


async def current_user(request: Request) -> CurrentUser | None:
    """Dependency: the signed-in user, or None."""
    token = request_token(request)
    if not token:
        return None
    settings: SessionSettings = await get_settings(request)
    return verify_token(token, settings.jwt_key)


async def require_user(user: Annotated[CurrentUser | None, Depends(current_user)]) -> CurrentUser:
    """Dependency: the signed-in user, or 401 `Not authorized`."""
    if user is None:
        raise NotAuthorizedError()
    return user


OptionalUser = Annotated[CurrentUser | None, Depends(current_user)]
RequiredUser = Annotated[CurrentUser, Depends(require_user)]

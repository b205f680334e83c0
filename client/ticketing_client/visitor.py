"""Who is visiting: the signed-in user behind the `session` cookie, and the browser's CSRF seed."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ticketing_client.api import Api
from ticketing_client.settings import Settings
from ticketing_common.sessions import COOKIE_NAME, CurrentUser, decode_cookie, verify_token

CSRF_COOKIE = "csrf"
_SEED = re.compile(r"[A-Za-z0-9_-]{32,64}")


def form_token(key: str, seed: str) -> str:
    """Signed double submit: the form carries an HMAC of the browser's random `csrf` cookie."""
    return hmac.new(key.encode(), b"csrf:" + seed.encode(), hashlib.sha256).hexdigest()


@dataclass
class Visitor:
    """Who is asking: the signed-in user (read from the session cookie) and the form token."""

    settings: Settings
    api: Api
    user: CurrentUser | None
    session: str | None
    csrf_seed: str
    csrf_is_new: bool

    @property
    def csrf_token(self) -> str:
        return form_token(self.settings.jwt_key, self.csrf_seed)

    def csrf_cookie(self) -> str | None:
        """The `Set-Cookie` that gives a browser its new seed; None once it has one."""
        if not self.csrf_is_new:
            return None
        flags = "; Secure" if self.settings.cookie_secure else ""
        return f"{CSRF_COOKIE}={self.csrf_seed}; Path=/; HttpOnly; SameSite=Lax{flags}"


def visit(settings: Settings, api: Api, cookies: Mapping[str, str]) -> Visitor:
    """The visitor whose browser sent `cookies`. The session cookie is read and verified by
    common's sessions and passed on to the APIs only if it names a user; a missing or malformed
    CSRF seed is replaced by a new one."""
    raw = cookies.get(COOKIE_NAME)
    token = decode_cookie(raw) if raw else None
    user = verify_token(token, settings.jwt_key) if token else None
    seed = cookies.get(CSRF_COOKIE, "")
    is_new = not _SEED.fullmatch(seed)
    if is_new:
        seed = secrets.token_urlsafe(32)
    return Visitor(settings, api, user, raw if user else None, seed, is_new)


def visitor_of(request: Request) -> Visitor:
    """The visitor of this request; raises while the app is not fully up (no API client)."""
    settings: Settings = request.app.state.settings
    api = request.app.state.runtime.get(Api)
    return visit(settings, api, request.cookies)


async def get_visitor(request: Request) -> Visitor:
    """Dependency: the visitor of this request."""
    return visitor_of(request)


VisitorDep = Annotated[Visitor, Depends(get_visitor)]

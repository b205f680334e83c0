"""A small aiohttp client for the four APIs, speaking for the visitor.

It forwards the visitor's `session` cookie, hands back the `Set-Cookie` headers an API sent (so
that sign-in and sign-out reach the browser), and turns `{"errors": [...]}` into messages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from starlette.exceptions import HTTPException

from ticketing_client.settings import Settings
from ticketing_common.errors import NotFoundError, ServiceUnavailableError
from ticketing_common.logs import request_id
from ticketing_common.sessions import COOKIE_NAME

log = logging.getLogger("ticketing.client.api")

Json = dict[str, Any]


class UpstreamError(HTTPException):
    """An API answered a page's read with a status the page cannot show; the page says so."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status_code=status, detail=message)


@dataclass(frozen=True)
class Problem:
    """One entry of an API's error body."""

    message: str
    field: str | None = None


@dataclass(frozen=True)
class Reply:
    """An API's answer: status, parsed body, error entries and the cookies to pass on."""

    status: int
    body: Any
    problems: tuple[Problem, ...] = ()
    set_cookies: tuple[str, ...] = field(default=())
    after: str | None = None  # the `after` cursor of the API's `rel="next"` link, if any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def messages(self) -> list[str]:
        return [p.message for p in self.problems]

    @property
    def fields(self) -> set[str]:
        """The form fields at fault, to mark those inputs invalid."""
        return {p.field for p in self.problems if p.field}

    def json(self) -> Json:
        return self.body if isinstance(self.body, dict) else {}

    def items(self) -> list[Json]:
        return [x for x in self.body if isinstance(x, dict)] if isinstance(self.body, list) else []

    def require(self) -> Reply:
        """For page reads: a 404 is the page's 404, a failure of the API the page's error."""
        if self.ok:
            return self
        if self.status == 404:
            raise NotFoundError()
        message = self.messages[0] if self.messages else "Something went wrong"
        raise UpstreamError(self.status if self.status >= 500 else 502, message)


def _problems(status: int, body: Any) -> tuple[Problem, ...]:
    if 200 <= status < 300:
        return ()
    errors = body.get("errors") if isinstance(body, dict) else None
    found = tuple(
        Problem(str(e["message"]), str(e["field"]) if e.get("field") else None)
        for e in (errors if isinstance(errors, list) else [])
        if isinstance(e, dict) and e.get("message")
    )
    return found or (Problem("Something went wrong"),)


def _next_cursor(links: Mapping[str, Mapping[str, object]]) -> str | None:
    """The cursor of a list's next page (`Link: <...?after=...>; rel="next"`), kept opaque."""
    link = links.get("next")
    if link is None or link.get("url") is None:
        return None
    found = parse_qs(urlsplit(str(link["url"])).query).get("after")
    return found[0] if found else None


class Api:
    """The APIs, over one long-lived aiohttp session shared by every request."""

    def __init__(self, http: aiohttp.ClientSession, settings: Settings) -> None:
        self.http = http
        self.base = {
            "users": settings.auth_url.rstrip("/"),
            "tickets": settings.tickets_url.rstrip("/"),
            "orders": settings.orders_url.rstrip("/"),
            "payments": settings.payments_url.rstrip("/"),
        }

    @staticmethod
    def session(settings: Settings) -> aiohttp.ClientSession:
        """The app's one ClientSession: pooled connections, no cookie jar of its own."""
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=30),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=settings.api_timeout_seconds),
            raise_for_status=False,
        )

    async def call(
        self,
        method: str,
        area: str,
        path: str = "",
        *,
        session: str | None,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Reply:
        url = f"{self.base[area]}/api/{area}{path}"
        headers = {"Accept": "application/json"}
        if session:
            headers["Cookie"] = f"{COOKIE_NAME}={session}"
        rid = request_id.get()
        if rid:
            headers["X-Request-Id"] = rid
        try:
            async with self.http.request(
                method, url, json=body, headers=headers, params=params
            ) as response:
                raw = await response.read()
                cookies = tuple(response.headers.getall("Set-Cookie", ()))
                status = response.status
                after = _next_cursor(response.links)
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("%s %s failed: %r", method, url, exc)
            raise ServiceUnavailableError() from None
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return Reply(status, parsed, _problems(status, parsed), cookies, after)

    # --- auth ---------------------------------------------------------------------------
    async def signup(self, email: str, password: str) -> Reply:
        body = {"email": email, "password": password}
        return await self.call("POST", "users", "/signup", session=None, body=body)

    async def signin(self, email: str, password: str) -> Reply:
        body = {"email": email, "password": password}
        return await self.call("POST", "users", "/signin", session=None, body=body)

    async def signout(self, session: str | None) -> Reply:
        return await self.call("POST", "users", "/signout", session=session)

    # --- tickets ------------------------------------------------------------------------
    async def tickets(self, after: str | None = None) -> Reply:
        """A page of open tickets, newest first: the first, or the one a cursor leads to."""
        params = {"after": after} if after is not None else None
        return await self.call("GET", "tickets", session=None, params=params)

    async def ticket(self, ticket_id: str) -> Reply:
        return await self.call("GET", "tickets", f"/{ticket_id}", session=None)

    async def create_ticket(self, session: str | None, title: str, price: str) -> Reply:
        body = {"title": title, "price": price}
        return await self.call("POST", "tickets", session=session, body=body)

    # --- orders -------------------------------------------------------------------------
    async def orders(self, session: str | None) -> Reply:
        return await self.call("GET", "orders", session=session)

    async def order(self, session: str | None, order_id: str) -> Reply:
        return await self.call("GET", "orders", f"/{order_id}", session=session)

    async def create_order(self, session: str | None, ticket_id: str) -> Reply:
        return await self.call("POST", "orders", session=session, body={"ticketId": ticket_id})

    # --- payments -----------------------------------------------------------------------
    async def pay(self, session: str | None, order_id: str, token: str) -> Reply:
        body = {"orderId": order_id, "token": token}
        return await self.call("POST", "payments", session=session, body=body)

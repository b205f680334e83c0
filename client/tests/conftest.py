"""Client tests run against the whole system (the `stack` fixture of `devstack.testing`):
visitors (`browsers`, `visitor`) through its ingress; and, with the harness's fixtures
(`service`, `settings`, `start`, `client` of `ticketing_testing`), the client in-process on the
stack's APIs, with settings of a test's own. The unit lane (`unit/`) needs neither."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from devstack.stack import Stack
from ticketing_client.service import SERVICE
from ticketing_client.settings import Settings
from ticketing_common.service import Service

CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


def csrf_token(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form token"
    return found.group(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_email() -> str:
    return f"{unique('user')}@example.com"


class Browser:
    """A visitor driven with httpx: keeps its cookies, reads form tokens off the pages."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def get(self, path: str) -> httpx.Response:
        return await self.http.get(path)

    async def token(self, path: str) -> str:
        page = await self.http.get(path)
        return csrf_token(page.text)

    async def submit(
        self, path: str, data: dict[str, str], *, form: str | None = None
    ) -> httpx.Response:
        """Post `data` to `path` as the form on page `form` (default: `path`) would."""
        token = await self.token(form or path)
        return await self.http.post(path, data={"csrf_token": token, **data})

    async def signup(self, email: str | None = None, password: str = "secret") -> str:
        email = email or new_email()
        response = await self.submit("/auth/signup", {"email": email, "password": password})
        assert response.status_code == 303, response.text
        return email

    async def sell(self, title: str, price: str = "20") -> str:
        response = await self.submit("/tickets/new", {"title": title, "price": price})
        assert response.status_code == 303, response.text
        return await self.ticket_id(title)

    async def ticket_id(self, title: str) -> str:
        page = await self.http.get("/")
        found = re.search(
            rf'href="/tickets/([0-9a-f]{{24}})" aria-label="View {re.escape(title)}"', page.text
        )
        assert found, f"{title} is not listed"
        return found.group(1)


def stack_jwt_key(stack: Stack) -> str:
    """The JWT key the stack gave its services (set, or made once under its data folder)."""
    return stack.environ.get("JWT_KEY") or (stack.data / "jwt_key").read_text().strip()


@pytest.fixture
def service() -> Service[Settings, None]:
    """The service under test, for the harness's `start` and `client`."""
    return SERVICE


@pytest.fixture
def settings(stack: Stack) -> Settings:
    """The client's settings under test: the running stack's APIs and JWT key, so that a client
    started in-process (`start(stripe_publishable_key=...)`, `client`) sees the stack's users,
    tickets and orders and reads its session cookies."""
    urls = stack.service_urls
    return Settings(
        jwt_key=stack_jwt_key(stack),
        cookie_secure=False,
        auth_url=urls["auth"],
        tickets_url=urls["tickets"],
        orders_url=urls["orders"],
        payments_url=urls["payments"],
    )


@pytest.fixture
async def browsers(stack: Stack) -> AsyncIterator[list[Browser]]:
    """Up to three independent visitors of the running system."""
    url = stack.url
    clients = [httpx.AsyncClient(base_url=url, timeout=20) for _ in range(3)]
    try:
        yield [Browser(c) for c in clients]
    finally:
        for client in clients:
            await client.aclose()


@pytest.fixture
async def visitor(browsers: list[Browser]) -> Browser:
    return browsers[0]

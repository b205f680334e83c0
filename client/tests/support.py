"""What the client tests share besides fixtures: a visitor driven with httpx (`Browser`), the
form token on a page, unique names, and the running stack's JWT key."""

from __future__ import annotations

import re
import uuid

import httpx

from devstack.stack import Stack

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

"""Client tests run against the whole system (the `stack` fixture of `devstack.testing`):
visitors (`browsers`, `visitor`) through its ingress; and, with the harness's fixtures
(`service`, `settings`, `start`, `client` of `ticketing_testing`), the client in-process on the
stack's APIs, with settings of a test's own. The unit lane (`unit/`) needs neither."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from devstack.stack import Stack
from ticketing_client.service import SERVICE
from ticketing_client.settings import Settings
from ticketing_common.service import Service

from .support import Browser, stack_jwt_key


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

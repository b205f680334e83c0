"""A real fakestripe server on a free port per test, Stripe SDK clients pointed at it, and a
webhook endpoint that records what reaches it (the helpers behind them are in `support.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import stripe

from fakestripe import create_app
from fakestripe.webhooks import Config

from .support import SECRET, Receiver, Server, serve


@pytest.fixture
def server() -> Iterator[Server]:
    """A fresh app (empty state), with no webhook endpoint."""
    with serve(create_app(Config())) as url:
        yield Server(url)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    with serve(endpoint) as url:
        endpoint.url = f"{url}/api/payments/webhook"
        yield endpoint
        endpoint.gate.set()


@pytest.fixture
def hooked(receiver: Receiver) -> Iterator[Server]:
    """A fresh app whose webhooks go to `receiver`: three attempts, quick back-off."""
    config = Config(url=receiver.url, secret=SECRET, max_attempts=3, retry_seconds=0.02)
    with serve(create_app(config)) as url:
        yield Server(url)


@pytest.fixture
def client(server: Server) -> stripe.StripeClient:
    """The synchronous SDK, as a script would use it (default RequestsClient)."""
    return stripe.StripeClient("sk_test_x", base_addresses={"api": server.url})


@pytest.fixture
def hooked_client(hooked: Server) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_x", base_addresses={"api": hooked.url})


@pytest.fixture
async def async_client(server: Server) -> AsyncIterator[stripe.StripeClient]:
    """The async SDK over httpx, as the payments service uses it."""
    http_client = stripe.HTTPXClient()
    yield stripe.StripeClient(
        "sk_test_x", base_addresses={"api": server.url}, http_client=http_client
    )
    await http_client.close_async()  # type: ignore[no-untyped-call]

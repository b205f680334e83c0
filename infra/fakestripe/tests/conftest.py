"""A real fakestripe server on a free port per test, and Stripe SDK clients pointed at it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import stripe
import uvicorn

from fakestripe import create_app


@dataclass
class Server:
    """Where the server listens; `intents()` reads its test-only listing, as service tests do."""

    url: str

    def intents(self) -> list[dict[str, object]]:
        data: list[dict[str, object]] = httpx.get(f"{self.url}/_test/payment_intents").json()[
            "data"
        ]
        return data


@pytest.fixture
def server() -> Iterator[Server]:
    """Serve a fresh app (empty state) over real HTTP from a background thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(), log_level="warning", lifespan="off")
    uv_server = uvicorn.Server(config)
    thread = threading.Thread(target=uv_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not uv_server.started:
        if not thread.is_alive():
            raise RuntimeError("fakestripe did not start")
        time.sleep(0.01)
    yield Server(f"http://127.0.0.1:{sock.getsockname()[1]}")
    uv_server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def client(server: Server) -> stripe.StripeClient:
    """The synchronous SDK, as a script would use it (default RequestsClient)."""
    return stripe.StripeClient("sk_test_x", base_addresses={"api": server.url})


@pytest.fixture
async def async_client(server: Server) -> AsyncIterator[stripe.StripeClient]:
    """The async SDK over httpx, as the payments service uses it."""
    http_client = stripe.HTTPXClient()
    yield stripe.StripeClient(
        "sk_test_x", base_addresses={"api": server.url}, http_client=http_client
    )
    await http_client.close_async()  # type: ignore[no-untyped-call]

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from bson import ObjectId

from ticketing_common.bus import EventBus
from ticketing_common.embedded import Server, free_port, wait_for_port
from ticketing_common.events import OrderStatus
from ticketing_common.testing import bearer, serve, service_settings, stream_messages
from ticketing_payments.main import build
from ticketing_payments.settings import Settings


class FakeStripe:
    """The project's Stripe-compatible test-mode server, run as its own process."""

    def __init__(self, url: str) -> None:
        self.url = url

    def intents(self, order_id: str | None = None) -> list[dict]:
        """Every PaymentIntent created so far (for one order, if named), from `/_test`."""
        data = httpx.get(f"{self.url}/_test/payment_intents").json()["data"]
        return [i for i in data if order_id is None or i["metadata"].get("orderId") == order_id]


@pytest.fixture(scope="session")
def fakestripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeStripe]:
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port)}
    log = (tmp_path_factory.mktemp("fakestripe") / "fakestripe.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "fakestripe"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server("fakestripe", f"http://127.0.0.1:{port}", port, process)
    try:
        wait_for_port(port, process, "fakestripe", 30)
        yield FakeStripe(server.url)
    finally:
        server.stop()
        log.close()


def make_settings(mongo_uri: str, nats_url: str, stripe_url: str, **overrides: object) -> Settings:
    values = service_settings(
        mongo_uri,
        nats_url,
        stripe_key="sk_test_payments",
        stripe_api_base=stripe_url,
        **overrides,
    )
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(mongo_uri: str, nats_url: str, fakestripe: FakeStripe) -> Settings:
    return make_settings(mongo_uri, nats_url, fakestripe.url)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(build(settings)) as http:
        yield http


def new_id() -> str:
    return str(ObjectId())


signin = bearer


async def add_order(
    db,
    *,
    user_id: str | None = None,
    price: float = 20,
    status: OrderStatus = OrderStatus.CREATED,
    expires_in: float = 900,
) -> dict:
    """An order in the replica, as the original tests built them with `Order.build().save()`."""
    order = {
        "_id": ObjectId(),
        "price": price,
        "status": str(status),
        "userId": user_id or new_id(),
        "version": 0,
        "expiresAt": datetime.now(UTC) + timedelta(seconds=expires_in),
    }
    await db["orders"].insert_one(order)
    return order


async def bus_messages(bus: EventBus, subject: str) -> list[dict]:
    """Every payload on `subject` in the stream so far, oldest first."""
    return [message["data"] for message in await stream_messages(bus, subject)]

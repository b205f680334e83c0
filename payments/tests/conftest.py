"""Fixtures for the payments service: the common harness (`ticketing_testing`) runs the service
this declares, with the project's Stripe-compatible test server (`fakestripe`) for Stripe. What
the tests arrange and read (orders in the replica, their payments) is in `support.py`."""

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from ticketing_common.embedded import free_port, start_stripe
from ticketing_common.service import Service
from ticketing_payments.service import SERVICE
from ticketing_payments.settings import Settings
from ticketing_payments.settlement import Settlement
from ticketing_testing import serve

from .support import STRIPE_KEY, WEBHOOK_SECRET, FakeStripe, stripe_settings


@pytest.fixture(scope="session")
def fakestripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeStripe]:
    # No WEBHOOK_URL: events are kept at the fake, and tests post them to the app themselves.
    env = {"WEBHOOK_URL": "", "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    log = tmp_path_factory.mktemp("fakestripe") / "fakestripe.log"
    with log.open("wb") as out:
        server = start_stripe(free_port(), out, env)
        try:
            yield FakeStripe(server.url)
        finally:
            server.stop()


@pytest.fixture
async def fake(fakestripe: FakeStripe) -> AsyncIterator[FakeStripe]:
    """The fake, with no fault left over from another test, and none left for the next."""
    await fakestripe.clear_faults()
    yield fakestripe
    await fakestripe.clear_faults()


@pytest.fixture
def service() -> Service[Settings, Settlement]:
    """The service under test, for the harness's `settings`, `start`, `acked`."""
    return SERVICE


@pytest.fixture
def stripe_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """Payments reads its Stripe key from the environment (`STRIPE_KEY`), as deployed."""
    monkeypatch.setenv("STRIPE_KEY", STRIPE_KEY)
    return STRIPE_KEY


@pytest.fixture
def settings(stripe_key: str, settings: Settings, fake: FakeStripe) -> Settings:
    """The common settings (its own database, the test bus, quick retries), with the fake for
    Stripe. `start(**overrides)` changes them further."""
    return settings.model_copy(update=stripe_settings(fake.url))


@pytest.fixture
def app(service: Service[Settings, Settlement], settings: Settings) -> FastAPI:
    """The app `client` serves: a test reconciles it (`reconcile(app)`)."""
    return service.build(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The common `client`, serving `app`, so that a test may reach its runtime."""
    async with serve(app) as http:
        yield http

"""Wires the payments service to MongoDB, NATS and Stripe, and runs it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ticketing_common.runtime import Runtime
from ticketing_common.service import serve_forever, service_lifespan
from ticketing_common.settings import load_settings
from ticketing_payments.app import create_app
from ticketing_payments.events.listeners import listeners
from ticketing_payments.gateway import StripeGateway
from ticketing_payments.models import INDEXES, ORDERS, upgrade_storage
from ticketing_payments.reconciler import reconciler
from ticketing_payments.settings import Settings


def build(settings: Settings) -> FastAPI:
    # The Stripe client holds an httpx connection pool: opened and closed with the app. The
    # listeners and the reconciler use it too, so it opens before they start.
    gateway = StripeGateway(settings)
    service = service_lifespan(
        settings,
        indexes=INDEXES,
        outbox=[ORDERS],
        listeners=listeners(gateway),
        periodic=[reconciler(gateway)],
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gateway = gateway
        gateway.open()
        try:
            async with service(app):
                runtime: Runtime = app.state.runtime
                await upgrade_storage(runtime.db)
                yield
        finally:
            await gateway.close()

    return create_app(settings, lifespan)


def main() -> None:
    settings = load_settings(Settings)
    serve_forever(build(settings), settings)

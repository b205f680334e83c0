"""Wires the payments service to MongoDB, NATS and Stripe, and runs it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ticketing_common.service import serve_forever, service_lifespan
from ticketing_common.settings import load_settings
from ticketing_payments.app import create_app
from ticketing_payments.events.listeners import LISTENERS
from ticketing_payments.gateway import StripeGateway
from ticketing_payments.models import INDEXES, PAYMENTS
from ticketing_payments.settings import Settings


def build(settings: Settings) -> FastAPI:
    service = service_lifespan(settings, indexes=INDEXES, outbox=[PAYMENTS], listeners=LISTENERS)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The Stripe client holds an httpx connection pool: opened and closed with the app.
        app.state.gateway = gateway = StripeGateway(settings)
        try:
            async with service(app):
                yield
        finally:
            await gateway.close()

    return create_app(settings, lifespan)


def main() -> None:
    settings = load_settings(Settings)
    serve_forever(build(settings), settings)

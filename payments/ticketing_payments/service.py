"""The payments service, declared once: charge an order through Stripe, keep one charge per
order, refund what cannot be kept; Stripe's webhooks and a reconciler finish what was left."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ticketing_common.runtime import Runtime
from ticketing_common.service import Service
from ticketing_payments.events.handlers import HANDLERS
from ticketing_payments.gateway import StripeGateway
from ticketing_payments.reconciler import RECONCILER
from ticketing_payments.repository import INDEXES, ORDERS, upgrade_storage
from ticketing_payments.routes import payments, webhooks
from ticketing_payments.settings import Settings
from ticketing_payments.settlement import Settlement


@asynccontextmanager
async def stripe_gateway(runtime: Runtime) -> AsyncIterator[None]:
    """The Stripe client (an httpx connection pool), open while the service runs."""
    assert isinstance(runtime.settings, Settings)
    gateway = StripeGateway(runtime.settings)
    gateway.open()
    runtime.provide(gateway)
    try:
        yield
    finally:
        await gateway.close()


@asynccontextmanager
async def upgraded_storage(runtime: Runtime) -> AsyncIterator[None]:
    """Payments an earlier release stored apart move into their orders first."""
    await upgrade_storage(runtime.db)
    yield


def _settlement(runtime: Runtime) -> Settlement:
    return Settlement(runtime.db, runtime.relay, runtime.get(StripeGateway), runtime.metrics)


SERVICE: Service[Settings, Settlement] = Service(
    settings=Settings,
    routers=[payments.router, webhooks.router],
    indexes=INDEXES,
    outbox=[ORDERS],
    resources=[stripe_gateway, upgraded_storage],
    context=_settlement,
    handlers=HANDLERS,
    periodic=[RECONCILER],
)

"""Wires the orders service to MongoDB and NATS and runs it."""

from __future__ import annotations

from fastapi import FastAPI

from ticketing_common.service import serve_forever, service_lifespan
from ticketing_common.settings import load_settings
from ticketing_orders.app import create_app
from ticketing_orders.events.listeners import LISTENERS, OVERDUE_SWEEP
from ticketing_orders.models import INDEXES, ORDERS
from ticketing_orders.settings import Settings


def build(settings: Settings) -> FastAPI:
    lifespan = service_lifespan(
        settings,
        indexes=INDEXES,
        outbox=[ORDERS],
        listeners=LISTENERS,
        periodic=[OVERDUE_SWEEP],
    )
    return create_app(settings, lifespan)


def main() -> None:
    settings = load_settings(Settings)
    serve_forever(build(settings), settings)

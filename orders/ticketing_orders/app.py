"""Builds the orders service's FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import Lifespan

from ticketing_common.service import service_app
from ticketing_orders.routes import orders
from ticketing_orders.settings import Settings


def create_app(settings: Settings, lifespan: Lifespan[FastAPI] | None = None) -> FastAPI:
    return service_app(
        settings,
        title="orders",
        api_prefix="/api/orders",
        routers=[orders.router],
        lifespan=lifespan,
    )

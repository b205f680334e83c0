"""Builds the payments service's FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import Lifespan

from ticketing_common.service import service_app
from ticketing_payments.routes import payments, webhooks
from ticketing_payments.settings import Settings


def create_app(settings: Settings, lifespan: Lifespan[FastAPI] | None = None) -> FastAPI:
    return service_app(
        settings,
        title="payments",
        api_prefix="/api/payments",
        routers=[payments.router, webhooks.router],
        lifespan=lifespan,
    )

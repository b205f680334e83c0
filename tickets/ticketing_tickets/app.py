"""Builds the tickets service's FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import Lifespan

from ticketing_common.service import service_app
from ticketing_tickets.routes import tickets
from ticketing_tickets.settings import Settings


def create_app(settings: Settings, lifespan: Lifespan[FastAPI] | None = None) -> FastAPI:
    return service_app(
        settings,
        title="tickets",
        api_prefix="/api/tickets",
        routers=[tickets.router],
        lifespan=lifespan,
    )

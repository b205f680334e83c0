"""Builds the client's FastAPI app: HTML pages, static files, HTML error pages."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import Lifespan

from ticketing_client.pages import install_html_errors
from ticketing_client.routes import auth, orders, tickets
from ticketing_client.settings import Settings
from ticketing_client.static import Assets
from ticketing_common.service import service_app


def create_app(settings: Settings, lifespan: Lifespan[FastAPI] | None = None) -> FastAPI:
    app = service_app(
        settings,
        title="client",
        api_prefix=None,
        routers=[auth.router, tickets.router, orders.router],
        lifespan=lifespan,
    )
    app.mount("/static", Assets(), name="static")
    install_html_errors(app)
    return app

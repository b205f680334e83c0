"""Builds the auth service's FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import Lifespan

from ticketing_auth.passwords import Passwords
from ticketing_auth.routes import users
from ticketing_auth.settings import Settings
from ticketing_common.service import service_app


def create_app(settings: Settings, lifespan: Lifespan[FastAPI] | None = None) -> FastAPI:
    app = service_app(
        settings, title="auth", api_prefix="/api/users", routers=[users.router], lifespan=lifespan
    )
    app.state.passwords = Passwords(settings)
    return app

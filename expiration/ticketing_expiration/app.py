"""Builds the expiration service's FastAPI app: no API, only /healthz and /readyz."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import Lifespan

from ticketing_common.service import service_app
from ticketing_expiration.settings import Settings


def create_app(settings: Settings, lifespan: Lifespan[FastAPI] | None = None) -> FastAPI:
    return service_app(settings, title="expiration", api_prefix=None, routers=[], lifespan=lifespan)

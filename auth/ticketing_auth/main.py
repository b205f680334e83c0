"""Wires the auth service to MongoDB and runs it."""

from __future__ import annotations

from fastapi import FastAPI

from ticketing_auth.app import create_app
from ticketing_auth.models import INDEXES
from ticketing_auth.settings import Settings
from ticketing_common.service import serve_forever, service_lifespan
from ticketing_common.settings import load_settings


def build(settings: Settings) -> FastAPI:
    return create_app(settings, service_lifespan(settings, indexes=INDEXES))


def main() -> None:
    settings = load_settings(Settings)
    serve_forever(build(settings), settings)

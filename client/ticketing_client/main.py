"""Wires the client to the APIs (one aiohttp session for the app's life) and runs it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Lifespan

from ticketing_client.api import Api
from ticketing_client.app import create_app
from ticketing_client.settings import Settings
from ticketing_common.service import run_service, serve_forever
from ticketing_common.settings import load_settings


def client_lifespan(settings: Settings) -> Lifespan[FastAPI]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # run_service gives /readyz its runtime; the client has no database or broker of its own.
        async with run_service(app, settings), Api.session(settings) as http:
            app.state.api = Api(http, settings)
            yield

    return lifespan


def build(settings: Settings) -> FastAPI:
    return create_app(settings, client_lifespan(settings))


def main() -> None:
    settings = load_settings(Settings)
    serve_forever(build(settings), settings)

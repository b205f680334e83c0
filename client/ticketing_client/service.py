"""The client, declared once: the marketplace's HTML pages, rendered on the server from the
APIs' answers (one aiohttp session for the app's life), with its static files and HTML error
pages. It has no database or broker of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ticketing_client.api import Api
from ticketing_client.error_pages import install_html_errors
from ticketing_client.routes import auth, orders, tickets
from ticketing_client.settings import Settings
from ticketing_client.static import Assets
from ticketing_common.runtime import Runtime
from ticketing_common.service import Service


@asynccontextmanager
async def api_session(runtime: Runtime) -> AsyncIterator[None]:
    assert isinstance(runtime.settings, Settings)
    async with Api.session(runtime.settings) as http:
        runtime.provide(Api(http, runtime.settings))
        yield


def _pages(app: FastAPI) -> None:
    app.mount("/static", Assets(), name="static")
    install_html_errors(app)


SERVICE: Service[Settings, None] = Service(
    settings=Settings,
    api_prefix="",  # the pages, at the root
    routers=[auth.router, tickets.router, orders.router],
    resources=[api_session],
    customize=_pages,
)

"""HTML error pages: the client answers refusals and failures with pages, not the APIs' JSON."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from ticketing_client.views import page
from ticketing_client.visitor import visitor_of
from ticketing_common.errors import DomainError
from ticketing_common.web import status_of

log = logging.getLogger("ticketing.client")

PAGES = {
    403: (
        "Invalid or missing form token",
        "The form was not accepted and nothing was done. Go back, reload the page and try again.",
    ),
    404: ("Page not found", "There is no such ticket, order or page."),
}


def error_text(status: int, message: str) -> tuple[str, str]:
    """Title and detail of the page for an error status; 5xx pages show the API's message when
    there is one."""
    title, detail = PAGES.get(status, (message, "Please try again in a moment."))
    if status >= 500:
        title = "Service unavailable" if status == 503 else "Something went wrong"
        detail = message if message != title else "Please try again in a moment."
    return title, detail


def error_page(request: Request, status: int, message: str) -> Response:
    """The HTML page for an error status."""
    title, detail = error_text(status, message)
    try:
        visitor = visitor_of(request)
    except Exception:  # not fully up (no API client yet): plain text will do
        return Response(title, status_code=status, media_type="text/plain")
    return page(visitor, "error.html", status=status, title=title, detail=detail)


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    return error_page(request, status_of(exc), exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (404, 405):
        return error_page(request, 404, "Not Found")
    return error_page(request, exc.status_code, str(exc.detail))


async def _validation_error(request: Request, exc: Exception) -> Response:
    return error_page(request, 404, "Not Found")


class HtmlRoute(APIRoute):
    """A page route: an unexpected failure is logged and answered with the HTML 500 page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except (StarletteHTTPException, DomainError, RequestValidationError):
                raise
            except Exception:
                log.exception("unexpected error on %s %s", request.method, request.url.path)
                return error_page(request, 500, "Something went wrong")

        return guarded


def install_html_errors(app: FastAPI) -> None:
    """Replace the JSON error bodies of the API services with HTML pages."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

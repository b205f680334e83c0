"""The web edge every service shares: domain errors and validation failures as the SPEC §1
error body with their HTTP status (the one place that maps them), and the last-resort 503/500."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ticketing_common.asgi import HttpMiddleware, TrackedSend
from ticketing_common.errors import (
    BadRequestError,
    Contention,
    DomainError,
    ErrorItem,
    ForbiddenError,
    NotAuthorizedError,
    NotFoundError,
    PaymentDeclinedError,
    ServiceUnavailableError,
    TooManyRequestsError,
    error_body,
    error_item,
)

log = logging.getLogger("ticketing.errors")

STATUS: dict[type[DomainError], int] = {
    BadRequestError: 400,
    NotAuthorizedError: 401,
    PaymentDeclinedError: 402,
    ForbiddenError: 403,
    NotFoundError: 404,
    TooManyRequestsError: 429,
    ServiceUnavailableError: 503,
}

# Failures of a dependency rather than of the request, answered with 503: `Contention`, and
# these drivers' exceptions, by module and name so that asking imports no driver.
DRIVER_OUTAGES: dict[str, tuple[str, ...]] = {
    "pymongo.errors": ("ConnectionFailure",),  # ServerSelectionTimeoutError is one
    "nats.errors": ("ConnectionClosedError", "NoServersError", "TimeoutError"),
}


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` is a dependency's failure: a driver's exception exists only once its module
    is loaded, so a service that never loads the driver need not import it to ask."""
    if isinstance(exc, Contention):
        return True
    for module_name, names in DRIVER_OUTAGES.items():
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, tuple(getattr(module, n) for n in names)):
            return True
    return False


def status_of(error: DomainError) -> int:
    """The HTTP status of a domain error: its own kind's, or the nearest parent's."""
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400


def error_response(
    status: int, items: Sequence[ErrorItem], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(items), status_code=status, headers=headers)


def error_headers(error: DomainError) -> dict[str, str]:
    """`Retry-After` for a refusal that passes with time (429, 503), so clients back off."""
    return {} if error.retry_after is None else {"Retry-After": str(error.retry_after)}


def validation_items(errors: Sequence[Any]) -> tuple[int, list[ErrorItem]]:
    """Map pydantic errors to SPEC items; a bad path parameter is an unknown resource."""
    items: list[ErrorItem] = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if loc[:1] == ("path",):
            return 404, [error_item(NotFoundError.default_message)]
        if len(loc) < 2 or err.get("type") == "json_invalid":
            item = error_item("Request body must be a JSON object")
        else:
            message = err["msg"] if err.get("type") == "rule" else "Invalid value"
            item = error_item(message, str(loc[1]))
        if item not in items:
            items.append(item)
    return 400, items


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return error_response(status_of(exc), exc.items(), error_headers(exc))


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    status, items = validation_items(exc.errors())
    return error_response(status, items)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (404, 405):
        return error_response(404, [error_item(NotFoundError.default_message)])
    return error_response(exc.status_code, [error_item(str(exc.detail))])


TOO_LARGE = "Request body too large"


class BodyTooLarge(StarletteHTTPException):
    """A request body past the limit, found while it was read: answered with 413."""

    def __init__(self) -> None:
        super().__init__(413, TOO_LARGE)


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    await error_response(413, [error_item(TOO_LARGE)])(scope, receive, send)


class BodyLimitMiddleware(HttpMiddleware):
    """Refuse a request body over `max_bytes` with 413: at once when its Content-Length says so,
    else as soon as the streamed (chunked) body grows past it, before more of it is read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = [v for k, v in scope["headers"] if k == b"content-length" and v.isdigit()]
        if declared and int(declared[0]) > self.max_bytes:
            await _too_large(scope, receive, send)
            return
        received = 0
        tracked = TrackedSend(send)

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, tracked)
        except BodyTooLarge:
            if tracked.started:
                raise
            await _too_large(scope, receive, send)


class UnexpectedErrorMiddleware(HttpMiddleware):
    """Turn an exception that escaped the handlers into a 503 or 500, logged, never leaked."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracked = TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except BodyTooLarge:
            raise  # answered with 413 by the BodyLimitMiddleware around this one
        except Exception as exc:
            if is_outage(exc):
                log.warning("dependency unavailable: %r", exc)
                response = error_response(503, [error_item("Service unavailable")])
            else:
                log.exception("unexpected error on %s %s", scope["method"], scope["path"])
                response = error_response(500, [error_item("Something went wrong")])
            if tracked.started:
                raise
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI, *, max_body_bytes: int | None = None) -> None:
    """The SPEC error shapes; with `max_body_bytes`, bodies past it are refused with 413."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(UnexpectedErrorMiddleware)
    if max_body_bytes is not None:
        app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)

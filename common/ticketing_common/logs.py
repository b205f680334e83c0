"""JSON logs that name the service and the request."""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from contextvars import ContextVar

from starlette.types import Message, Receive, Scope, Send

from ticketing_common import tracing
from ticketing_common.asgi import HttpMiddleware

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
log = logging.getLogger("ticketing.http")


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            entry["requestId"] = rid
        if ids := tracing.current_ids():
            entry["traceId"], entry["spanId"] = ids
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    JsonFormatter.converter = time.gmtime
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "nats"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def given_request_id(scope: Scope) -> str | None:
    """The client's `X-Request-Id`, if it is printable ASCII (at most 64 characters kept);
    anything else (bytes that are not text, control characters) is ignored, never an error."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if all(0x20 <= byte <= 0x7E for byte in value):
                return value.decode("ascii").strip()[:64] or None
            return None
    return None


class RequestContextMiddleware(HttpMiddleware):
    """Give every request an id (kept from `X-Request-Id` when sent) and log its outcome."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = given_request_id(scope) or uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if scope["path"] not in ("/healthz", "/readyz"):
                log.info(
                    "%s %s %d %.1fms",
                    scope["method"],
                    scope["path"],
                    status,
                    (time.perf_counter() - started) * 1000,
                )
            request_id.reset(token)

"""The dev ingress: a plain reverse proxy that plays ingress-nginx's part on one machine.

It routes by path prefix (SPEC §1), passes requests and answers through untouched (a request
body buffered as ingress-nginx buffers it, answers streamed), and adds only the `X-Forwarded-*`
headers a real ingress adds. A route whose service does not answer gets 503 with the SPEC error
body. Run it with `python -m devstack.ingress`, configured by `INGRESS_PORT`, `INGRESS_HOST`
(127.0.0.1) and `ROUTES`, a JSON object `{"/api/users": "http://127.0.0.1:3001", ...,
"/": "http://127.0.0.1:3006"}`. aiohttp, not httpx: STACK-NOTES §11.

Like the production ingresses it refuses a request body over `MAX_BODY_BYTES` (1 MiB) with 413
before forwarding it, and can limit sign-ins and sign-ups per client address with 429:
`INGRESS_SIGNIN_RATE` requests a minute, off when empty or 0 (the default, as `make run` serves
one developer and every test suite from one address).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import aiohttp
import uvloop
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from ticketing_common.logs import configure_logging

log = logging.getLogger("ticketing.ingress")

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
UNAVAILABLE = {"errors": [{"message": "Service unavailable"}]}
TOO_LARGE = {"errors": [{"message": "Request body too large"}]}
TOO_MANY = {"errors": [{"message": "Too many requests"}]}
NOT_FOUND = {"errors": [{"message": "Not Found"}]}
# What the production ingresses limit per client address (infra/nginx, infra/k8s).
SIGNIN_PATHS = frozenset({"/api/users/signin", "/api/users/signup"})
DEFAULT_MAX_BODY_BYTES = 1 << 20  # as the services' MAX_BODY_BYTES
WINDOW_SECONDS = 60.0


class RateLimiter:
    """At most `per_minute` requests per client in any 60 s; 0 lets every request through."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.seen: dict[str, deque[float]] = {}

    def wait(self, client: str) -> float:
        """Seconds until `client` may try again, or 0: then this request is let through and
        counted (refused ones are not, as with nginx's limit_req)."""
        if self.per_minute <= 0:
            return 0.0
        now = self.clock()
        times = self.seen.setdefault(client, deque())
        while times and times[0] <= now - WINDOW_SECONDS:
            times.popleft()
        if len(times) >= self.per_minute:
            return times[0] + WINDOW_SECONDS - now
        times.append(now)
        return 0.0


@dataclass(frozen=True)
class Limits:
    """What the ingress refuses before forwarding."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    signin_per_minute: int = 0


async def read_capped(content: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole request body, or None once it grows past `limit` (a chunked body has no
    Content-Length to refuse it by). Buffered as ingress-nginx does, so the service gets it
    with a Content-Length in one write."""
    chunks: list[bytes] = []
    received = 0
    async for chunk in content.iter_any():
        received += len(chunk)
        if received > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


SESSION = web.AppKey("session", aiohttp.ClientSession)
ROUTES: web.AppKey[dict[str, str]] = web.AppKey("routes")
LIMITS = web.AppKey("limits", Limits)
SIGNIN = web.AppKey("signin", RateLimiter)


def route(routes: Mapping[str, str], path: str) -> str | None:
    """The upstream of the longest prefix that matches whole path segments (`/api/usersx` is not
    `/api/users`); None when no route matches."""
    best: str | None = None
    for prefix in routes:
        bare = prefix.rstrip("/")
        if (path == bare or path.startswith(bare + "/")) and (
            best is None or len(bare) > len(best.rstrip("/"))
        ):
            best = prefix
    return None if best is None else routes[best]


def forward_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """Every end-to-end header, repeated ones kept, without those `Connection` names."""
    named = {
        token.strip().lower()
        for value in CIMultiDict(headers).getall("Connection", [])
        for token in value.split(",")
    }
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in HOP_BY_HOP and name.lower() not in named:
            kept.add(name, value)
    return kept


def upstream_headers(request: web.Request) -> CIMultiDict[str]:
    headers = forward_headers(request.headers)
    peer = request.remote or ""
    prior = ", ".join(headers.popall("X-Forwarded-For", []))
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    return headers


def stale(exc: aiohttp.ClientError) -> bool:
    """A kept-alive connection that broke; a refused connection means the service is down."""
    broken = isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)
    return broken and not isinstance(exc, aiohttp.ClientConnectorError)


def unavailable() -> web.Response:
    return web.json_response(UNAVAILABLE, status=503)


def too_large() -> web.Response:
    return web.json_response(TOO_LARGE, status=413)


def too_many(wait: float) -> web.Response:
    retry_after = str(max(1, math.ceil(wait)))
    return web.json_response(TOO_MANY, status=429, headers={"Retry-After": retry_after})


def refusal(request: web.Request) -> web.Response | None:
    """413 for a declared body over the limit, 429 for a sign-in beyond the rate; else None."""
    declared = request.content_length
    if declared is not None and declared > request.app[LIMITS].max_body_bytes:
        return too_large()
    if request.method == "POST" and request.path in SIGNIN_PATHS:
        wait = request.app[SIGNIN].wait(request.remote or "")
        if wait > 0:
            return too_many(wait)
    return None


def internal(path: str) -> bool:
    """A service's own metrics stay on its port: never reachable through the ingress."""
    return path == "/metrics" or path.startswith("/metrics/")


async def proxy(request: web.Request) -> web.StreamResponse:
    if internal(request.path):
        return web.json_response(NOT_FOUND, status=404)
    routes = request.app[ROUTES]
    base = route(routes, request.path)
    if base is None:
        return unavailable()
    refused = refusal(request)
    if refused is not None:
        return refused
    url = URL(base.rstrip("/") + request.raw_path, encoded=True)
    session = request.app[SESSION]
    body = None
    if request.body_exists:
        body = await read_capped(request.content, request.app[LIMITS].max_body_bytes)
        if body is None:
            return too_large()
    # A body-less request is retried once on a pooled connection the service had just closed
    # (nothing reached the service); one with a body may have, so it is not replayed.
    retry = body is None
    while True:
        try:
            upstream = await session.request(
                request.method,
                url,
                headers=upstream_headers(request),
                data=body,
                allow_redirects=False,
            )
            break
        except aiohttp.ClientError as exc:
            if retry and stale(exc):
                retry = False
                continue
            log.warning("%s %s: %s unavailable (%r)", request.method, request.path, base, exc)
            return unavailable()
    async with upstream:
        headers = forward_headers(upstream.headers)
        if upstream.content.is_eof():  # the whole answer came: headers and body in one write
            body = upstream.content.read_nowait()
            return web.Response(
                status=upstream.status, reason=upstream.reason, headers=headers, body=body
            )
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=headers
        )
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except aiohttp.ClientError as exc:
            # Too late for a 503: cut the connection, so the caller sees a truncated answer.
            log.warning(
                "%s %s: %s broke off its answer (%r)", request.method, request.path, base, exc
            )
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
    return response


async def client_session(app: web.Application) -> AsyncIterator[None]:
    """One pooled client; no cookie jar (the browser's cookies are not the ingress's), no
    decompression and no default headers, so bytes and headers pass as the browser sent them."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4)  # uvicorn closes idle at 5 s
    app[SESSION] = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
    )
    yield
    await app[SESSION].close()


def create_app(routes: Mapping[str, str], limits: Limits | None = None) -> web.Application:
    limits = limits or Limits()
    app = web.Application()
    app[ROUTES] = dict(routes)
    app[LIMITS] = limits
    app[SIGNIN] = RateLimiter(limits.signin_per_minute)
    app.cleanup_ctx.append(client_session)
    # `[\s\S]`, not `.`: a path may hold an encoded newline, and it is the service's to refuse.
    app.router.add_route("*", "/{tail:[\\s\\S]*}", proxy)
    return app


def count_setting(environ: Mapping[str, str], name: str, default: int) -> int:
    """A whole number ≥ 0 from the environment (empty is the default), or stop with its name."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()):
        raise SystemExit(f"{name} must be a whole number, not {raw!r}")
    return int(raw)


def limits_from(environ: Mapping[str, str]) -> Limits:
    """The services' `MAX_BODY_BYTES` (so both agree) and `INGRESS_SIGNIN_RATE` a minute."""
    return Limits(
        max_body_bytes=count_setting(environ, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
        signin_per_minute=count_setting(environ, "INGRESS_SIGNIN_RATE", 0),
    )


def main() -> None:
    configure_logging("ingress", os.environ.get("LOG_LEVEL", "INFO"))
    routes: dict[str, str] = json.loads(os.environ.get("ROUTES", "{}"))
    host = os.environ.get("INGRESS_HOST", "127.0.0.1")
    port = int(os.environ.get("INGRESS_PORT", "8080"))
    limits = limits_from(os.environ)
    log.info("listening on http://%s:%d, routes %s, %s", host, port, json.dumps(routes), limits)
    web.run_app(
        create_app(routes, limits),
        loop=uvloop.new_event_loop(),  # as the services' uvicorn: cheaper socket writes
        host=host,
        port=port,
        print=None,
        access_log=None,
        shutdown_timeout=5,
    )


if __name__ == "__main__":
    main()

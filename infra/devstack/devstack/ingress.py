"""The dev ingress: a plain reverse proxy that plays ingress-nginx's part on one machine.

It routes by path prefix (SPEC §1), passes requests and answers through untouched and streamed,
and adds only the `X-Forwarded-*` headers a real ingress adds. A route whose service does not
answer gets 503 with the SPEC error body. Run it with `python -m devstack.ingress`, configured by
`INGRESS_PORT`, `INGRESS_HOST` (127.0.0.1) and `ROUTES`, a JSON object `{"/api/users": "http://
127.0.0.1:3001", ..., "/": "http://127.0.0.1:3006"}`. aiohttp, not httpx: STACK-NOTES §11.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Mapping

import aiohttp
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
SESSION = web.AppKey("session", aiohttp.ClientSession)
ROUTES: web.AppKey[dict[str, str]] = web.AppKey("routes")


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


async def proxy(request: web.Request) -> web.StreamResponse:
    routes = request.app[ROUTES]
    base = route(routes, request.path)
    if base is None:
        return unavailable()
    url = URL(base.rstrip("/") + request.raw_path, encoded=True)
    session = request.app[SESSION]
    # A body-less request is retried once on a pooled connection the service had just closed
    # (nothing reached the service). A streamed body cannot be replayed.
    retry = not request.body_exists
    while True:
        try:
            upstream = await session.request(
                request.method,
                url,
                headers=upstream_headers(request),
                data=request.content if request.body_exists else None,
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
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in forward_headers(upstream.headers).items():
            response.headers.add(name, value)
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


def create_app(routes: Mapping[str, str]) -> web.Application:
    app = web.Application()
    app[ROUTES] = dict(routes)
    app.cleanup_ctx.append(client_session)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main() -> None:
    configure_logging("ingress", os.environ.get("LOG_LEVEL", "INFO"))
    routes: dict[str, str] = json.loads(os.environ.get("ROUTES", "{}"))
    host = os.environ.get("INGRESS_HOST", "127.0.0.1")
    port = int(os.environ.get("INGRESS_PORT", "8080"))
    log.info("listening on http://%s:%d, routes %s", host, port, json.dumps(routes))
    web.run_app(
        create_app(routes), host=host, port=port, print=None, access_log=None, shutdown_timeout=5
    )


if __name__ == "__main__":
    main()

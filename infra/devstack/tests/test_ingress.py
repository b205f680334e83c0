"""The dev ingress as a real process, in front of small upstream apps run by the test."""

import asyncio
import gzip
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from devstack.ingress import Limits, RateLimiter, limits_from, route
from ticketing_common.embedded import free_port, wait_for_port

LIMIT_SETTINGS = ("MAX_BODY_BYTES", "INGRESS_SIGNIN_RATE")
MIB = 1 << 20


@dataclass
class Upstreams:
    """Ports the ingress routes to: `users` (/api/users), `rest` (/) and `down` (/api/tickets,
    where nothing listens)."""

    users: int = field(default_factory=free_port)
    rest: int = field(default_factory=free_port)
    down: int = field(default_factory=free_port)


@dataclass
class Signals:
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture(scope="module")
def upstreams() -> Upstreams:
    return Upstreams()


@contextmanager
def running_ingress(
    upstreams: Upstreams, log_dir: Path, settings: Mapping[str, str] | None = None
) -> Iterator[str]:
    """`python -m devstack.ingress` in front of the upstreams, with `settings` in its
    environment; its URL until the block ends, then it must have stopped cleanly."""
    port = free_port()
    routes = {
        "/api/users": f"http://127.0.0.1:{upstreams.users}",
        "/api/tickets": f"http://127.0.0.1:{upstreams.down}",
        "/": f"http://127.0.0.1:{upstreams.rest}/",
    }
    # The limits are the defaults unless `settings` names them, whatever the caller's shell says.
    inherited = {k: v for k, v in os.environ.items() if k not in LIMIT_SETTINGS}
    env = {**inherited, **(settings or {}), "INGRESS_PORT": str(port), "ROUTES": json.dumps(routes)}
    log_path = log_dir / "ingress.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "devstack.ingress"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, process, "ingress", 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        code = process.wait(15)
    assert code == 0, log_path.read_text()


@pytest.fixture(scope="module")
def ingress(upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The ingress as `make run` starts it: default limits."""
    with running_ingress(upstreams, tmp_path_factory.mktemp("ingress")) as url:
        yield url


def upstream_app(signals: Signals) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "port": request.transport.get_extra_info("sockname")[1],
                "method": request.method,
                "raw_path": request.raw_path,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body": (await request.read()).decode(),
            }
        )

    async def cookies(request: web.Request) -> web.Response:
        response = web.Response(status=201, text="made")
        response.headers.add("Set-Cookie", "a=1; Path=/; HttpOnly")
        response.headers.add("Set-Cookie", "b=2; Path=/; SameSite=Lax")
        response.headers.add("X-Multi", "one")
        response.headers.add("X-Multi", "two")
        return response

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first\n")
        await signals.release.wait()
        await response.write(b"second\n")
        await response.write_eof()
        return response

    async def upload(request: web.Request) -> web.Response:
        received = await request.read()
        framing = {k: request.headers.get(k) for k in ("Content-Length", "Transfer-Encoding")}
        return web.json_response({"received": received.decode(), "framing": framing})

    async def zipped(request: web.Request) -> web.Response:
        body = gzip.compress(b"hello " * 100)
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    async def broken(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 100
        await response.prepare(request)
        await response.write(b"x" * 10)
        await signals.release.wait()
        assert request.transport is not None
        request.transport.abort()
        return response

    async def empty(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/api/users/cookies", cookies)
    app.router.add_get("/api/users/stream", stream)
    app.router.add_post("/api/users/upload", upload)
    app.router.add_get("/api/users/zipped", zipped)
    app.router.add_delete("/api/users/empty", empty)
    app.router.add_get("/api/users/broken", broken)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.fixture
async def signals(upstreams: Upstreams) -> AsyncIterator[Signals]:
    """Both upstreams running for this test (in its event loop)."""
    signals = Signals()
    runner = web.AppRunner(upstream_app(signals))
    await runner.setup()
    for port in (upstreams.users, upstreams.rest):
        await web.TCPSite(runner, "127.0.0.1", port).start()
    yield signals
    await runner.cleanup()


@pytest.fixture
async def http(ingress: str, signals: Signals) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ingress, trust_env=False) as client:
        yield client


def headers_of(answer: httpx.Response) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in answer.json()["headers"]]


async def test_forwards_method_raw_path_query_headers_and_body(
    http: httpx.AsyncClient, upstreams: Upstreams, ingress: str
) -> None:
    answer = await http.put(
        "/api/users/a%2Fb/c?x=1&x=2&y=%20z&flag",
        content=b'{"email": "a@b.co"}',
        headers=[
            ("Content-Type", "application/json"),
            ("X-Custom", "one"),
            ("X-Custom", "two"),
            ("Cookie", "session=abc; other=1"),
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "only for the ingress"),
            ("Keep-Alive", "timeout=5"),
        ],
    )
    assert answer.status_code == 200
    echoed = answer.json()
    assert echoed["port"] == upstreams.users
    assert echoed["method"] == "PUT"
    assert echoed["raw_path"] == "/api/users/a%2Fb/c?x=1&x=2&y=%20z&flag"
    assert echoed["body"] == '{"email": "a@b.co"}'
    headers = headers_of(answer)
    host = ingress.removeprefix("http://")
    assert ("x-custom", "one") in headers
    assert ("x-custom", "two") in headers
    assert ("cookie", "session=abc; other=1") in headers
    assert ("content-type", "application/json") in headers
    assert ("host", host) in headers
    assert ("x-forwarded-for", "127.0.0.1") in headers
    assert ("x-forwarded-proto", "http") in headers
    assert ("x-forwarded-host", host) in headers
    names = {name for name, _ in headers}
    assert "x-secret" not in names
    assert "keep-alive" not in names
    assert "user-agent" in names  # httpx's own, passed through


async def test_adds_the_peer_to_a_forwarded_for_chain(http: httpx.AsyncClient) -> None:
    answer = await http.get("/api/users/x", headers={"X-Forwarded-For": "10.0.0.1"})
    assert ("x-forwarded-for", "10.0.0.1, 127.0.0.1") in headers_of(answer)


async def test_adds_no_headers_the_caller_did_not_send(ingress: str, signals: Signals) -> None:
    """A bare request reaches the service bare: no Accept, User-Agent or Content-Type added."""
    host, port = ingress.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /api/users/x HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
    await writer.drain()
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    names = {name.lower() for name, _ in json.loads(body)["headers"]}
    assert names == {"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ("/api/users", "users"),
        ("/api/users/signup", "users"),
        ("/api/usersx", "rest"),
        ("/api/orders/1", "rest"),
        ("/", "rest"),
        ("/tickets/new?x=1", "rest"),
        ("/healthz", "rest"),
        ("/readyz", "rest"),
    ],
)
async def test_routes_by_whole_path_segments(
    http: httpx.AsyncClient, upstreams: Upstreams, path: str, where: str
) -> None:
    answer = await http.get(path)
    assert answer.status_code == 200
    assert answer.json()["port"] == getattr(upstreams, where)
    assert answer.json()["raw_path"] == path


def test_route_table() -> None:
    routes = {"/api/users": "A", "/api/users/admin": "B", "/": "C"}
    assert route(routes, "/api/users/admin/x") == "B"
    assert route(routes, "/api/users/adminx") == "A"
    assert route(routes, "/elsewhere") == "C"
    assert route({"/api/users": "A"}, "/") is None


async def test_keeps_status_and_every_repeated_header(http: httpx.AsyncClient) -> None:
    answer = await http.post("/api/users/cookies")
    assert answer.status_code == 201
    assert answer.text == "made"
    assert answer.headers.get_list("set-cookie") == [
        "a=1; Path=/; HttpOnly",
        "b=2; Path=/; SameSite=Lax",
    ]
    assert answer.headers.get_list("x-multi") == ["one", "two"]
    assert dict(answer.cookies) == {"a": "1", "b": "2"}


async def test_passes_compressed_bodies_untouched(http: httpx.AsyncClient) -> None:
    answer = await http.get("/api/users/zipped", headers={"Accept-Encoding": "gzip"})
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.text == "hello " * 100


async def test_head_and_no_content(http: httpx.AsyncClient) -> None:
    head = await http.head("/api/users/x")
    assert head.status_code == 200
    assert head.content == b""
    empty = await http.delete("/api/users/empty")
    assert empty.status_code == 204
    assert empty.content == b""


async def test_streams_the_answer(http: httpx.AsyncClient, signals: Signals) -> None:
    """The first part arrives while the upstream still holds back the second."""
    async with http.stream("GET", "/api/users/stream") as answer:
        chunks = answer.aiter_raw()
        first = await asyncio.wait_for(anext(chunks), 10)
        assert first == b"first\n"
        signals.release.set()
        rest = b"".join([chunk async for chunk in chunks])
    assert rest == b"second\n"


async def test_an_answer_the_service_breaks_off_stays_broken(
    http: httpx.AsyncClient, signals: Signals
) -> None:
    """Not a clean short answer: the caller sees the truncation."""
    async with http.stream("GET", "/api/users/broken") as answer:
        assert answer.status_code == 200
        chunks = answer.aiter_raw()
        assert await asyncio.wait_for(anext(chunks), 10) == b"x" * 10
        signals.release.set()
        with pytest.raises(httpx.RemoteProtocolError):
            await anext(chunks)


async def test_a_chunked_request_body_reaches_the_service_whole(http: httpx.AsyncClient) -> None:
    """Buffered as ingress-nginx buffers it: the service gets one body with its length."""

    async def body() -> AsyncIterator[bytes]:
        yield b"part1"
        yield b"part2"

    answer = await http.post("/api/users/upload", content=body())
    assert answer.json() == {
        "received": "part1part2",
        "framing": {"Content-Length": "10", "Transfer-Encoding": None},
    }


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_service_that_is_down_is_503(http: httpx.AsyncClient, method: str) -> None:
    answer = await http.request(method, "/api/tickets/1", json={"title": "x"})
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == {"errors": [{"message": "Service unavailable"}]}


async def test_serves_again_once_the_service_is_back(ingress: str, upstreams: Upstreams) -> None:
    """Connections the ingress pooled to a service that restarted do not turn into errors."""
    async with httpx.AsyncClient(base_url=ingress, trust_env=False) as client:
        assert (await client.get("/api/users/x")).status_code == 503
        for _ in range(3):
            runner = web.AppRunner(upstream_app(Signals()))
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", upstreams.users).start()
            try:
                for _ in range(3):
                    assert (await client.get("/api/users/x")).status_code == 200
            finally:
                await runner.cleanup()
            assert (await client.get("/api/users/x")).status_code == 503


# --- limits: request bodies over 1 MiB, sign-ins beyond a rate -----------------------------------

TOO_LARGE = {"errors": [{"message": "Request body too large"}]}
TOO_MANY = {"errors": [{"message": "Too many requests"}]}


async def test_a_declared_body_over_one_mebibyte_is_413_before_it_is_forwarded(
    http: httpx.AsyncClient,
) -> None:
    """Sent to a route whose service is down: a forwarded request would get the 503."""
    answer = await http.post("/api/tickets", content=b"x" * (5 * 1000 * 1000))
    assert answer.status_code == 413
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == TOO_LARGE


async def test_a_chunked_body_growing_past_one_mebibyte_is_413(http: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * (1000 * 1000)

    answer = await http.post("/api/users/upload", content=body())
    assert answer.status_code == 413
    assert answer.json() == TOO_LARGE


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_of_exactly_one_mebibyte_is_forwarded(
    http: httpx.AsyncClient, chunked: bool
) -> None:
    payload = b"y" * MIB

    async def body() -> AsyncIterator[bytes]:
        yield payload[: MIB // 2]
        yield payload[MIB // 2 :]

    answer = await http.post("/api/users/upload", content=body() if chunked else payload)
    assert answer.status_code == 200
    assert len(answer.json()["received"]) == MIB


async def test_sign_ins_are_not_limited_by_default(http: httpx.AsyncClient) -> None:
    """`make run` serves one developer and every test suite from one address."""
    for path in ("/api/users/signin", "/api/users/signup"):
        statuses = [(await http.post(path, json={})).status_code for _ in range(30)]
        assert statuses == [200] * 30, path


@pytest.fixture(scope="module")
def limited_ingress(
    upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An ingress that lets 3 sign-ins or sign-ups a minute through per client address."""
    log_dir = tmp_path_factory.mktemp("limited-ingress")
    with running_ingress(upstreams, log_dir, {"INGRESS_SIGNIN_RATE": "3"}) as url:
        yield url


async def test_a_sign_in_beyond_the_rate_is_429_with_retry_after(
    limited_ingress: str, signals: Signals
) -> None:
    """Sign-ins and sign-ups share the count; other routes and methods are not limited."""
    async with httpx.AsyncClient(base_url=limited_ingress, trust_env=False) as client:
        allowed = [
            await client.post("/api/users/signin", json={}),
            await client.post("/api/users/signup", json={}),
            await client.post("/api/users/signin", json={}),
        ]
        refused = await client.post("/api/users/signup", json={})
        others = [
            await client.get("/api/users/signin"),
            await client.post("/api/users/signout", json={}),
            await client.post("/api/users/signin/x", json={}),
        ]
    assert [a.status_code for a in allowed] == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.json() == TOO_MANY
    assert refused.headers["content-type"].startswith("application/json")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert [o.status_code for o in others] == [200, 200, 200]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_limiter_counts_per_client_within_a_sliding_minute() -> None:
    clock = Clock()
    limiter = RateLimiter(2, clock)
    assert limiter.wait("a") == 0
    clock.now += 10
    assert limiter.wait("a") == 0
    assert limiter.wait("a") == 50, "until the first request leaves the window"
    assert limiter.wait("b") == 0, "another client has its own count"
    clock.now += 50
    assert limiter.wait("a") == 0
    assert limiter.wait("a") == 10, "refused requests were not counted"


def test_a_rate_of_zero_lets_every_request_through() -> None:
    limiter = RateLimiter(0, Clock())
    assert all(limiter.wait("a") == 0 for _ in range(100))


def test_limits_come_from_the_environment() -> None:
    assert limits_from({}) == Limits(max_body_bytes=MIB, signin_per_minute=0)
    assert limits_from({"INGRESS_SIGNIN_RATE": ""}).signin_per_minute == 0
    assert limits_from({"INGRESS_SIGNIN_RATE": "10", "MAX_BODY_BYTES": "2048"}) == Limits(
        max_body_bytes=2048, signin_per_minute=10
    )
    with pytest.raises(SystemExit, match=r"^INGRESS_SIGNIN_RATE must be a whole number"):
        limits_from({"INGRESS_SIGNIN_RATE": "ten"})

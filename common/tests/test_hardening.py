"""Hostile or broken input at the shared web edge: header bytes that are not text, oversized
bodies, and a readiness probe while the database is down. Each through a service app built
in-process, as a client or an operator sees it."""

from collections.abc import AsyncIterator

import pytest
from fastapi import APIRouter, Request

from ticketing_common.embedded import free_port
from ticketing_common.service import Service
from ticketing_common.settings import MongoSettings, ServiceSettings
from ticketing_testing import eventually, serve

router = APIRouter()


@router.post("/echo")
async def echo(request: Request) -> dict[str, int]:
    return {"received": len(await request.body())}


@router.post("/things", status_code=201)
async def create(body: dict[str, object]) -> dict[str, object]:
    return body


class ProbeSettings(ServiceSettings):
    service_name: str = "probe"


class ProbeMongoSettings(ServiceSettings, MongoSettings):
    service_name: str = "probe"


PROBE: Service[ProbeSettings, None] = Service(
    settings=ProbeSettings, routers=[router], api_prefix="/api/probe"
)
PROBE_MONGO: Service[ProbeMongoSettings, None] = Service(
    settings=ProbeMongoSettings, routers=[router], api_prefix="/api/probe"
)
TOO_LARGE = {"errors": [{"message": "Request body too large"}]}


# --- 1. an X-Request-Id that is not text is ignored --------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/api/probe/nowhere"])
async def test_a_request_id_that_is_not_text_is_ignored_and_the_request_answered(path):
    async with serve(PROBE.build(ProbeSettings())) as client:
        response = await client.get(path, headers=[(b"X-Request-Id", b"\xff\xfe")])
    if path == "/healthz":
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
    else:
        assert response.status_code == 404
        assert response.json() == {"errors": [{"message": "Not Found"}]}
    fresh = response.headers["x-request-id"]
    assert len(fresh) == 32
    int(fresh, 16)


async def test_a_request_id_with_control_bytes_is_replaced_and_a_text_one_kept():
    async with serve(PROBE.build(ProbeSettings())) as client:
        control = await client.get("/healthz", headers=[(b"X-Request-Id", b"a\x01b")])
        kept = await client.get("/healthz", headers=[(b"X-Request-Id", b"trace-42")])
    assert control.status_code == 200
    assert len(control.headers["x-request-id"]) == 32
    assert kept.headers["x-request-id"] == "trace-42"


# --- 2. request bodies over the limit get 413 ---------------------------------------------------


def test_the_body_limit_is_one_mebibyte_by_default():
    assert ProbeSettings().max_body_bytes == 1024 * 1024


async def test_a_body_at_the_default_limit_is_accepted_and_one_byte_more_refused():
    limit = 1024 * 1024
    async with serve(PROBE.build(ProbeSettings())) as client:
        at_limit = await client.post("/api/probe/echo", content=b"x" * limit)
        over = await client.post("/api/probe/echo", content=b"x" * (limit + 1))
    assert at_limit.status_code == 200
    assert at_limit.json() == {"received": limit}
    assert over.status_code == 413
    assert over.json() == TOO_LARGE


async def test_a_content_length_over_the_limit_is_refused_before_the_body_is_read():
    pulled: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for _ in range(4):
            pulled.append(1)
            yield b"x" * 1024

    async with serve(PROBE.build(ProbeSettings(max_body_bytes=2048))) as client:
        response = await client.post(
            "/api/probe/things", content=body(), headers={"Content-Length": "4096"}
        )
    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    assert response.headers["x-request-id"]
    assert pulled == []


@pytest.mark.parametrize("path", ["/api/probe/things", "/api/probe/echo"])
async def test_a_chunked_body_growing_past_the_limit_is_refused_while_streaming(path):
    pulled: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for _ in range(64):
            pulled.append(1)
            yield b"x" * 1024

    async with serve(PROBE.build(ProbeSettings(max_body_bytes=4096))) as client:
        response = await client.post(path, content=body())
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json() == TOO_LARGE
    assert len(pulled) < 64  # reading stopped once past the limit


async def test_a_chunked_body_within_the_limit_is_accepted():
    async def body() -> AsyncIterator[bytes]:
        yield b'{"title": '
        yield b'"concert"}'

    async with serve(PROBE.build(ProbeSettings(max_body_bytes=4096))) as client:
        response = await client.post(
            "/api/probe/things", content=body(), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 201
    assert response.json() == {"title": "concert"}


# --- 4. /readyz answers 503 at once while MongoDB is down ----------------------------------------


async def test_readyz_is_503_while_mongodb_is_down():
    closed = f"mongodb://127.0.0.1:{free_port()}/probe"
    async with serve(PROBE_MONGO.build(ProbeMongoSettings(mongo_uri=closed))) as client:
        response = await client.get("/readyz")
        health = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"errors": [{"message": "Service unavailable"}]}
    assert health.status_code == 200


async def test_readyz_is_200_while_mongodb_answers(mongo_uri):
    async with serve(PROBE_MONGO.build(ProbeMongoSettings(mongo_uri=mongo_uri))) as client:

        async def ready():
            response = await client.get("/readyz")
            return response.status_code == 200 and response.json() == {"status": "ready"}

        assert await eventually(ready)

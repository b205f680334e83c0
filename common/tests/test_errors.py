"""The SPEC error body for every failure a service can meet."""

from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Query
from pydantic import AfterValidator, BaseModel
from pymongo.errors import ServerSelectionTimeoutError

from ticketing_common.errors import (
    BadRequestError,
    Contention,
    NotFoundError,
    ServiceUnavailableError,
    TooManyRequestsError,
)
from ticketing_common.mongo import require_object_id
from ticketing_common.service import service_app
from ticketing_common.settings import ServiceSettings
from ticketing_common.validation import Money, required, rule, trimmed

router = APIRouter()


def _not_blank(value: str) -> str:
    if not trimmed(value):
        raise ValueError("blank")
    return trimmed(value)


class Body(BaseModel):
    title: Annotated[str, AfterValidator(_not_blank), rule("Title is required")] = required()
    price: Annotated[Money, rule("Price must be greater than 0")] = required()


@router.post("/things")
async def create(body: Body) -> dict[str, object]:
    if body.title == "taken":
        raise BadRequestError("Title in use")
    return body.model_dump()


@router.get("/things")
async def index(
    limit: Annotated[int, Query(), rule("Limit must be between 1 and 100")] = 100,
) -> dict[str, int]:
    if not 1 <= limit <= 100:
        raise BadRequestError("Limit must be between 1 and 100", "limit")
    return {"limit": limit}


@router.get("/things/{thing_id}")
async def show(thing_id: str) -> dict[str, str]:
    require_object_id(thing_id)
    raise NotFoundError()


@router.get("/boom")
async def boom() -> None:
    raise RuntimeError("secret detail")


@router.get("/outage")
async def outage() -> None:
    raise ServerSelectionTimeoutError("mongo down")


@router.get("/contention")
async def contention() -> None:
    raise Contention("things 1 kept changing")


@router.get("/locked")
async def locked() -> None:
    raise TooManyRequestsError(retry_after=42)


@router.get("/busy")
async def busy() -> None:
    raise ServiceUnavailableError(retry_after=1)


@pytest.fixture
async def client():
    app = service_app(ServiceSettings(), title="t", api_prefix="/api/t", routers=[router])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://t") as http:
        yield http


async def test_every_failed_rule_is_listed_with_its_field(client):
    response = await client.post("/api/t/things", json={"title": "  ", "price": "abc"})
    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            {"message": "Title is required", "field": "title"},
            {"message": "Price must be greater than 0", "field": "price"},
        ]
    }


@pytest.mark.parametrize(
    "price", [0, -1, "abc", True, [1], {"a": 1}, "NaN", "Infinity", 1_000_000.01, 1.234, None]
)
async def test_prices_that_are_refused(client, price):
    response = await client.post("/api/t/things", json={"title": "t", "price": price})
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"message": "Price must be greater than 0", "field": "price"}
    ]


@pytest.mark.parametrize(("price", "stored"), [(20, 20.0), ("12.50", 12.5), (1_000_000, 1e6)])
async def test_prices_that_are_accepted(client, price, stored):
    response = await client.post("/api/t/things", json={"title": " t ", "price": price})
    assert response.status_code == 200
    assert response.json() == {"title": "t", "price": stored}


async def test_business_rule_errors_have_no_field(client):
    response = await client.post("/api/t/things", json={"title": "taken", "price": 1})
    assert response.json() == {"errors": [{"message": "Title in use"}]}


async def test_query_parameters_out_of_range_name_their_field(client):
    for query in ("limit=0", "limit=101", "limit=x"):
        response = await client.get(f"/api/t/things?{query}")
        assert response.status_code == 400
        assert response.json() == {
            "errors": [{"message": "Limit must be between 1 and 100", "field": "limit"}]
        }


async def test_malformed_ids_unknown_routes_and_methods_are_404(client):
    for method, path in (
        ("GET", "/api/t/things/not-an-id"),
        ("GET", "/api/t/things/" + "a" * 24),
        ("GET", "/api/t/nowhere"),
        ("PATCH", "/api/t/things"),
    ):
        response = await client.request(method, path)
        assert response.status_code == 404
        assert response.json() == {"errors": [{"message": "Not Found"}]}


async def test_unexpected_errors_are_500_without_detail(client, caplog):
    response = await client.get("/api/t/boom")
    assert response.status_code == 500
    assert response.json() == {"errors": [{"message": "Something went wrong"}]}
    assert "secret detail" not in response.text
    assert "secret detail" in caplog.text


@pytest.mark.parametrize("path", ["/api/t/outage", "/api/t/contention"])
async def test_a_dependency_outage_or_endless_contention_is_503(client, path):
    response = await client.get(path)
    assert response.status_code == 503
    assert response.json() == {"errors": [{"message": "Service unavailable"}]}


async def test_every_response_carries_a_request_id(client):
    given = await client.get("/api/t/nowhere", headers={"X-Request-Id": "abc123"})
    assert given.headers["x-request-id"] == "abc123"
    fresh = await client.get("/api/t/nowhere")
    assert len(fresh.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("path", "status", "message", "seconds"),
    [
        ("/api/t/locked", 429, "Too many requests", "42"),
        ("/api/t/busy", 503, "Service unavailable", "1"),
    ],
)
async def test_a_refusal_that_passes_with_time_sends_retry_after(
    client, path, status, message, seconds
):
    response = await client.get(path)
    assert response.status_code == status
    assert response.json() == {"errors": [{"message": message}]}
    assert response.headers["retry-after"] == seconds


async def test_other_refusals_send_no_retry_after(client):
    for response in (
        await client.post("/api/t/things", json={"title": "taken", "price": 1}),
        await client.get("/api/t/contention"),
        await client.get("/api/t/nowhere"),
    ):
        assert "retry-after" not in response.headers

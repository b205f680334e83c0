"""API docs are served under the API prefix unless `API_DOCS=false` (SPEC §1): production turns
them off, so the API's shape is not published. Each through a service app built in-process."""

import pytest
from fastapi import APIRouter

from ticketing_common.service import Service
from ticketing_common.settings import ServiceSettings
from ticketing_testing import serve

router = APIRouter()


@router.get("/things")
async def things() -> list[str]:
    return []


class DocsSettings(ServiceSettings):
    service_name: str = "docs"


DOCS: Service[DocsSettings, None] = Service(
    settings=DocsSettings, routers=[router], api_prefix="/api/docs-probe"
)
DOC_PATHS = ["/api/docs-probe/docs", "/api/docs-probe/openapi.json"]
NOT_FOUND = {"errors": [{"message": "Not Found"}]}


async def test_docs_and_the_openapi_json_are_served_by_default() -> None:
    assert DocsSettings().api_docs is True
    async with serve(DOCS.build(DocsSettings())) as client:
        ui = await client.get("/api/docs-probe/docs")
        schema = await client.get("/api/docs-probe/openapi.json")
    assert ui.status_code == 200
    assert "swagger-ui" in ui.text.lower()
    assert schema.status_code == 200
    assert "/api/docs-probe/things" in schema.json()["paths"]


@pytest.mark.parametrize(
    "path", [*DOC_PATHS, "/api/docs-probe/redoc", "/api/docs-probe/docs/oauth2-redirect"]
)
async def test_api_docs_off_serves_no_docs_and_no_schema(path: str) -> None:
    async with serve(DOCS.build(DocsSettings(api_docs=False))) as client:
        answer = await client.get(path)
        api = await client.get("/api/docs-probe/things")
    assert answer.status_code == 404
    assert answer.json() == NOT_FOUND
    assert api.status_code == 200, "the API itself is still served"


async def test_redoc_is_never_served() -> None:
    """One docs UI is enough: ReDoc stays off even when docs are on."""
    async with serve(DOCS.build(DocsSettings())) as client:
        answer = await client.get("/api/docs-probe/redoc")
    assert answer.status_code == 404

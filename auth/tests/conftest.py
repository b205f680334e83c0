from collections.abc import AsyncIterator

import httpx
import pytest

from ticketing_auth.service import SERVICE
from ticketing_auth.settings import Settings
from ticketing_testing import TEST_JWT_KEY, serve


def make_settings(mongo_uri: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "mongo_uri": mongo_uri,
        "jwt_key": TEST_JWT_KEY,
        "cookie_secure": False,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "argon2_parallelism": 1,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def client(mongo_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(SERVICE.build(make_settings(mongo_uri))) as http:
        yield http

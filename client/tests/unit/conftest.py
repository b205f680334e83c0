"""The unit lane: the client's pure pieces, no server and no stack. `settings` here is the
client's settings under test, as in the parent conftest, but naming APIs nothing calls."""

from __future__ import annotations

from typing import cast

import aiohttp
import pytest

from ticketing_client.api import Api
from ticketing_client.settings import Settings
from ticketing_client.visitor import Visitor, visit
from ticketing_testing import TEST_JWT_KEY

from .support import MakeVisitor


@pytest.fixture
def settings() -> Settings:
    return Settings(
        jwt_key=TEST_JWT_KEY,
        cookie_secure=False,
        auth_url="http://auth.invalid",
        tickets_url="http://tickets.invalid",
        orders_url="http://orders.invalid",
        payments_url="http://payments.invalid",
    )


@pytest.fixture
def api(settings: Settings) -> Api:
    """An API client that is never called: no session behind it."""
    return Api(cast(aiohttp.ClientSession, None), settings)


@pytest.fixture
def make_visitor(settings: Settings, api: Api) -> MakeVisitor:
    """`make_visitor(session=..., csrf=...)`: the visitor whose browser sent those cookies."""

    def make(**cookies: str) -> Visitor:
        return visit(settings, api, cookies)

    return make

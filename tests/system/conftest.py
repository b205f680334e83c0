"""Fixtures for system tests: users talking to a running stack through its ingress (see
`support.py`)."""

import pytest

from .support import user_factory


@pytest.fixture
async def users(stack):
    async with user_factory(stack.url) as make:
        yield make

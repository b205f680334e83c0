from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis, RedisSettings, create_pool

from ticketing_common.bus import EventBus
from ticketing_expiration.service import SERVICE
from ticketing_expiration.settings import Settings

from .support import Expirations


@pytest.fixture
def service():
    return SERVICE


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The common settings; start-up and shutdown bounded for tests that stop servers."""
    return settings.model_copy(update={"startup_timeout_seconds": 5, "shutdown_grace_seconds": 2})


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    redis = await create_pool(RedisSettings.from_dsn(redis_url))
    yield redis
    await redis.aclose()


@pytest.fixture
async def expirations(bus: EventBus) -> AsyncIterator[Expirations]:
    subscription = Expirations()
    await subscription.start(bus)
    yield subscription
    await subscription.stop()

import pytest

from ticketing_auth.service import SERVICE
from ticketing_auth.settings import Settings


@pytest.fixture
def service():
    return SERVICE


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The common settings, with cheap Argon2 costs: tests hash many passwords."""
    return settings.model_copy(
        update={"argon2_time_cost": 1, "argon2_memory_kib": 1024, "argon2_parallelism": 1}
    )

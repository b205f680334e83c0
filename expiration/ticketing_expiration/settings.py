"""The expiration service's settings, from the environment."""

from pydantic import Field

from ticketing_common.settings import NatsSettings, ServiceSettings


class Settings(ServiceSettings, NatsSettings):
    """A zero poll delay, try count or jobs at once would stop expiry without a word (arq would
    spin, fail every job unrun, or run none), so start-up refuses it."""

    service_name: str = "expiration"
    redis_url: str
    # How often the arq worker looks for due jobs: an expiration fires this late at most.
    poll_delay_seconds: float = Field(default=0.05, gt=0)
    # While a finished job's result is kept, scheduling its order again is a no-op.
    job_keep_result_seconds: int = 86400
    # Publishing is retried with back-off (capped at job_retry_max_seconds) this many times.
    job_max_tries: int = Field(default=1000, ge=1)
    job_retry_max_seconds: float = 30.0
    job_timeout_seconds: float = 60.0
    max_concurrent_jobs: int = Field(default=50, ge=1)

"""The expiration service's settings, from the environment."""

from ticketing_common.settings import NatsSettings, ServiceSettings


class Settings(ServiceSettings, NatsSettings):
    service_name: str = "expiration"
    redis_url: str
    # How often the arq worker looks for due jobs: an expiration fires this late at most.
    poll_delay_seconds: float = 0.05
    # While a finished job's result is kept, scheduling its order again is a no-op.
    job_keep_result_seconds: int = 86400
    # Publishing is retried with back-off (capped at job_retry_max_seconds) this many times.
    job_max_tries: int = 1000
    job_retry_max_seconds: float = 30.0
    job_timeout_seconds: float = 60.0
    max_concurrent_jobs: int = 50
    # On shutdown, jobs in progress get this long to finish; the rest run again after restart.
    shutdown_grace_seconds: float = 10.0

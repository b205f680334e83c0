"""The auth service's settings, from the environment."""

from pydantic import Field

from ticketing_common.settings import MongoSettings, ServiceSettings, SessionSettings


class Settings(ServiceSettings, MongoSettings, SessionSettings):
    service_name: str = "auth"
    # Argon2id cost; the defaults are pwdlib's recommendation (about 0.14 s a hash on 2 cores).
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4
    # At most this many hashes (sign-up, sign-in) run at once, so hashing holds at most
    # `hash_concurrency` x `argon2_memory_kib`; fewer if half the cgroup memory limit holds
    # fewer (see capacity.py). Further requests wait their turn, at most `hash_queue` of them;
    # past that they are refused with 503 and `Retry-After`.
    hash_concurrency: int = Field(default=2, ge=1)
    hash_queue: int = Field(default=16, ge=0)
    signin_max_failures: int = 10
    signin_window_seconds: int = 900

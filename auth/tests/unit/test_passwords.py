"""Password hashing is a bounded pool: at most `hash_concurrency` hashes run at once, at most
`hash_queue` more wait for a slot and then succeed, the rest are refused with 503 and
`Retry-After`. No server; a stand-in hasher blocks until the test lets it go."""

import asyncio
import threading

import pytest

from ticketing_auth.passwords import Passwords
from ticketing_auth.settings import Settings
from ticketing_common.errors import ServiceUnavailableError
from ticketing_common.web import status_of


def cheap_settings(**overrides: object) -> Settings:
    return Settings(
        mongo_uri="mongodb://db/auth",
        jwt_key="k" * 32,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        argon2_parallelism=1,
        **overrides,
    )


class HeldHasher:
    """Counts the hashes in progress (and the most ever at once); each waits for `release`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.in_progress = 0
        self.most = 0
        self.release = threading.Event()
        self.started = asyncio.Event()  # the first hash is running

    def _run(self, result: object) -> object:
        with self.lock:
            self.in_progress += 1
            self.most = max(self.most, self.in_progress)
        self.loop.call_soon_threadsafe(self.started.set)
        self.release.wait()
        with self.lock:
            self.in_progress -= 1
        return result

    def hash(self, password: str) -> object:
        return self._run(f"hash of {password}")

    def verify(self, password: str, password_hash: str) -> object:
        return self._run(password_hash == f"hash of {password}")


def held_passwords(**overrides: object) -> tuple[Passwords, HeldHasher]:
    passwords = Passwords(cheap_settings(**overrides))
    hasher = HeldHasher(asyncio.get_running_loop())
    passwords._hasher = hasher  # type: ignore[assignment]
    return passwords, hasher


async def until(condition) -> None:
    """Let other tasks run until `condition()` holds (no clock: a bounded number of turns)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def test_the_pool_settings_default_and_read_the_environment(monkeypatch):
    assert (cheap_settings().hash_concurrency, cheap_settings().hash_queue) == (2, 16)
    monkeypatch.setenv("HASH_CONCURRENCY", "1")
    monkeypatch.setenv("HASH_QUEUE", "0")
    assert (cheap_settings().hash_concurrency, cheap_settings().hash_queue) == (1, 0)


async def test_with_one_slot_the_others_wait_until_the_first_ends():
    passwords, hasher = held_passwords(hash_concurrency=1, hash_queue=3)
    try:
        first = asyncio.create_task(passwords.hash("one"))
        await hasher.started.wait()
        rest = [
            asyncio.create_task(passwords.hash("two")),
            asyncio.create_task(passwords.verify("three", "hash of three")),
            asyncio.create_task(passwords.verify("four", "wrong hash")),
        ]
        await until(lambda: passwords.pool.waiting == 3)
        assert (hasher.most, hasher.in_progress) == (1, 1)
        hasher.release.set()
        assert await first == "hash of one"
        assert await asyncio.gather(*rest) == ["hash of two", True, False]
        assert hasher.most == 1
    finally:
        hasher.release.set()


async def test_a_full_queue_refuses_at_once_with_503_and_retry_after():
    passwords, hasher = held_passwords(hash_concurrency=1, hash_queue=1)
    try:
        running = asyncio.create_task(passwords.hash("one"))
        await hasher.started.wait()
        queued = asyncio.create_task(passwords.hash("two"))
        await until(lambda: passwords.pool.waiting == 1)
        with pytest.raises(ServiceUnavailableError) as refused:
            await passwords.verify("three", "hash of three")
        assert status_of(refused.value) == 503
        assert refused.value.retry_after == 1
        assert refused.value.items() == [{"message": "Service unavailable"}]
        hasher.release.set()
        assert await asyncio.gather(running, queued) == ["hash of one", "hash of two"]
        assert await passwords.verify("four", "hash of four") is True  # room again
    finally:
        hasher.release.set()


async def test_with_no_queue_a_busy_pool_refuses_the_next_hash():
    passwords, hasher = held_passwords(hash_concurrency=1, hash_queue=0)
    try:
        running = asyncio.create_task(passwords.hash("one"))
        await hasher.started.wait()
        with pytest.raises(ServiceUnavailableError):
            await passwords.hash("two")
        hasher.release.set()
        assert await running == "hash of one"
    finally:
        hasher.release.set()


async def test_a_waiter_that_gives_up_leaves_the_queue():
    passwords, hasher = held_passwords(hash_concurrency=1, hash_queue=1)
    try:
        running = asyncio.create_task(passwords.hash("one"))
        await hasher.started.wait()
        gave_up = asyncio.create_task(passwords.hash("two"))
        await until(lambda: passwords.pool.waiting == 1)
        gave_up.cancel()
        await until(lambda: passwords.pool.waiting == 0)
        queued = asyncio.create_task(passwords.hash("three"))  # its place is free again
        await until(lambda: passwords.pool.waiting == 1)
        hasher.release.set()
        assert await asyncio.gather(running, queued) == ["hash of one", "hash of three"]
        assert gave_up.cancelled()
    finally:
        hasher.release.set()

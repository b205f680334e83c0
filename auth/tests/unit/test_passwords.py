"""Password hashing is bounded: at most `hash_concurrency` hashes run at once, the rest wait
for a slot and then succeed. No server; a stand-in hasher blocks until the test lets it go."""

import asyncio
import threading

from ticketing_auth.passwords import Passwords
from ticketing_auth.settings import Settings


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
        self.overlapped = asyncio.Event()  # two ran at once

    def _run(self, result: object) -> object:
        with self.lock:
            self.in_progress += 1
            self.most = max(self.most, self.in_progress)
            overlapping = self.in_progress > 1
        self.loop.call_soon_threadsafe(self.started.set)
        if overlapping:
            self.loop.call_soon_threadsafe(self.overlapped.set)
        self.release.wait()
        with self.lock:
            self.in_progress -= 1
        return result

    def hash(self, password: str) -> object:
        return self._run(f"hash of {password}")

    def verify(self, password: str, password_hash: str) -> object:
        return self._run(password_hash == f"hash of {password}")


def test_hash_concurrency_defaults_to_two_and_reads_the_environment(monkeypatch):
    assert cheap_settings().hash_concurrency == 2
    monkeypatch.setenv("HASH_CONCURRENCY", "1")
    assert cheap_settings().hash_concurrency == 1


class WatchedSlots(asyncio.Semaphore):
    """The semaphore `Passwords` makes, counting the acquires that had to wait for a slot."""

    def __init__(self, value: int, waiters_expected: int, all_waiting: asyncio.Event) -> None:
        super().__init__(value)
        self.waiters = 0
        self.waiters_expected = waiters_expected
        self.all_waiting = all_waiting

    async def acquire(self) -> bool:
        if self.locked():
            self.waiters += 1
            if self.waiters >= self.waiters_expected:
                self.all_waiting.set()
        return await super().acquire()


async def test_with_one_slot_a_second_hash_waits_until_the_first_ends(monkeypatch):
    others = 3
    all_waiting = asyncio.Event()
    monkeypatch.setattr(
        asyncio, "Semaphore", lambda value: WatchedSlots(value, others, all_waiting)
    )
    passwords = Passwords(cheap_settings(hash_concurrency=1))
    monkeypatch.undo()
    hasher = HeldHasher(asyncio.get_running_loop())
    passwords._hasher = hasher  # type: ignore[assignment]
    try:
        first = asyncio.create_task(passwords.hash("one"))
        await hasher.started.wait()
        rest = [
            asyncio.create_task(passwords.hash("two")),
            asyncio.create_task(passwords.verify("three", "hash of three")),
            asyncio.create_task(passwords.verify("four", "wrong hash")),
        ]
        assert len(rest) == others
        # Either every other hash is waiting for the slot, or one started beside the first.
        waiting = asyncio.create_task(all_waiting.wait())
        overlapped = asyncio.create_task(hasher.overlapped.wait())
        await asyncio.wait({waiting, overlapped}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        overlapped.cancel()
        assert hasher.most == 1
        assert hasher.in_progress == 1
        hasher.release.set()
        assert await first == "hash of one"
        assert await asyncio.gather(*rest) == ["hash of two", True, False]
        assert hasher.most == 1
    finally:
        hasher.release.set()

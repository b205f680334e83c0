"""Argon2 password hashing off the event loop in a bounded pool (a few at once, a few more
waiting, the rest refused), with a decoy for unknown emails."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from ticketing_auth.capacity import hash_slots, memory_limit_bytes, read_memory_limit
from ticketing_auth.settings import Settings
from ticketing_common.errors import ServiceUnavailableError
from ticketing_common.metrics import Metrics

T = TypeVar("T")
log = logging.getLogger("ticketing.auth.passwords")

# A refused hash's client may try again this soon: a hash takes about 0.14 s, so a second
# drains a full queue at the default settings.
BUSY_RETRY_AFTER = 1


class HashPool:
    """Runs hashes in threads, at most `slots` at once (memory stays within that many times the
    Argon2 cost) and at most `queue` more waiting for a slot; past that a request is refused
    with 503 and `Retry-After` at once, rather than piling up waiters without end."""

    def __init__(self, slots: int, queue: int) -> None:
        self.slots = slots
        self.queue = queue
        self._free = asyncio.Semaphore(slots)
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """How many hashes wait for a slot now."""
        return self._waiting

    async def run(self, work: Callable[[], T]) -> T:
        """Run `work` in a thread once a slot is free. The slot is given back when the thread
        ends, not when the caller stops waiting: a cancelled request's hash still holds its
        memory until it finishes."""
        await self._acquire()
        try:
            running = asyncio.get_running_loop().run_in_executor(None, work)
        except BaseException:
            self._free.release()
            raise
        running.add_done_callback(lambda _: self._free.release())
        return await asyncio.shield(running)

    async def _acquire(self) -> None:
        """Take a slot, waiting in the queue if there is room in it, else refuse (503)."""
        if self._free.locked() and self._waiting >= self.queue:
            raise ServiceUnavailableError(retry_after=BUSY_RETRY_AFTER)
        self._waiting += 1
        try:
            await self._free.acquire()
        finally:
            self._waiting -= 1


def pool_for(settings: Settings, limit_text: str | None) -> HashPool:
    """The pool the settings and the container's memory limit allow."""
    hash_bytes = settings.argon2_memory_kib * 1024
    slots = hash_slots(limit_text, hash_bytes, settings.hash_concurrency)
    limit = memory_limit_bytes(limit_text)
    log.info(
        "password hashing: %d at once (memory limit %s), %d more may wait",
        slots,
        "none" if limit is None else f"{limit} bytes",
        settings.hash_queue,
    )
    return HashPool(slots, settings.hash_queue)


class Passwords:
    """Hashing and verifying with the configured Argon2 cost, through the bounded pool."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self._seconds = (metrics or Metrics()).argon2_seconds
        self._hasher = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=settings.argon2_time_cost,
                    memory_cost=settings.argon2_memory_kib,
                    parallelism=settings.argon2_parallelism,
                ),
            )
        )
        self.pool = pool_for(settings, read_memory_limit())
        # Verifying against this decoy makes an unknown email cost what a wrong password does.
        self._decoy = self._hasher.hash("decoy password")

    async def hash(self, password: str) -> str:
        hashing = functools.partial(self._timed, "hash", self._hasher.hash, password)
        return await self.pool.run(hashing)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        against = password_hash or self._decoy
        verifying = functools.partial(self._timed, "verify", self._hasher.verify, password, against)
        ok = await self.pool.run(verifying)
        return ok and password_hash is not None

    def _timed(self, operation: str, work: Callable[..., T], *args: str) -> T:
        """Run one hash or verify, timed in its worker thread: the wait for a slot is not
        part of its cost."""
        start = time.perf_counter()
        try:
            return work(*args)
        finally:
            self._seconds.labels(operation).observe(time.perf_counter() - start)

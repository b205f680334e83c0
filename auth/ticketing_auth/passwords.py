"""Argon2 password hashing off the event loop, a bounded number at a time, with a decoy for
unknown emails."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TypeVar

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from ticketing_auth.settings import Settings

T = TypeVar("T")


class Passwords:
    """Each hash takes `argon2_memory_kib` in a worker thread: at most `hash_concurrency` run
    at once (memory stays within that many times the Argon2 cost, whatever the thread pool's
    size); the rest wait for a slot, they are not refused."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=settings.argon2_time_cost,
                    memory_cost=settings.argon2_memory_kib,
                    parallelism=settings.argon2_parallelism,
                ),
            )
        )
        self._slots = asyncio.Semaphore(settings.hash_concurrency)
        # Verifying against this decoy makes an unknown email cost what a wrong password does.
        self._decoy = self._hasher.hash("decoy password")

    async def _bounded(self, work: Callable[[], T]) -> T:
        """Run `work` in a thread once a slot is free. The slot is given back when the thread
        ends, not when the caller stops waiting: a cancelled request's hash still holds its
        memory until it finishes."""
        await self._slots.acquire()
        try:
            running = asyncio.get_running_loop().run_in_executor(None, work)
        except BaseException:
            self._slots.release()
            raise
        running.add_done_callback(lambda _: self._slots.release())
        return await asyncio.shield(running)

    async def hash(self, password: str) -> str:
        return await self._bounded(functools.partial(self._hasher.hash, password))

    async def verify(self, password: str, password_hash: str | None) -> bool:
        ok = await self._bounded(
            functools.partial(self._hasher.verify, password, password_hash or self._decoy)
        )
        return ok and password_hash is not None

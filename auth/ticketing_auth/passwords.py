"""Argon2 password hashing off the event loop, with a decoy for unknown emails."""

from __future__ import annotations

import asyncio

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from ticketing_auth.settings import Settings


class Passwords:
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
        # Verifying against this decoy makes an unknown email cost what a wrong password does.
        self._decoy = self._hasher.hash("decoy password")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        ok = await asyncio.to_thread(self._hasher.verify, password, password_hash or self._decoy)
        return ok and password_hash is not None

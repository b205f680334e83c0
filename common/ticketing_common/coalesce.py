"""Request coalescing for hot reads: concurrent reads of one key share the read in flight.

A read joins another only while no write has been noted since that read began, so a caller
never gets an answer older than its own process's last completed write (read-your-writes);
a write made elsewhere (another replica) is seen by the next read that starts after it, as
without coalescing, give or take one read in flight. Nothing is kept once a read is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalesced(Generic[K, V]):
    """Reads by key, shared while in flight; `changed()` after each write ends the sharing."""

    def __init__(self) -> None:
        self._generation = 0
        self._flights: dict[K, tuple[int, asyncio.Future[V]]] = {}

    def changed(self) -> None:
        """A write completed: reads begun before it are no longer joined."""
        self._generation += 1

    async def read(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        flight = self._flights.get(key)
        if flight is None or flight[0] != self._generation:
            flight = (self._generation, asyncio.ensure_future(load()))
            self._flights[key] = flight
            flight[1].add_done_callback(lambda done: self._landed(key, done))
        # Shielded: a caller that goes away does not cancel the read for the others.
        return await asyncio.shield(flight[1])

    def _landed(self, key: K, done: asyncio.Future[V]) -> None:
        current = self._flights.get(key)
        if current is not None and current[1] is done:
            del self._flights[key]
        if not done.cancelled():
            done.exception()  # retrieved: a read whose callers all went away logs nothing

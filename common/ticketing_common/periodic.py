"""A timer loop: work a service runs every few seconds while it is up (the outbox sweep, and the
services' `Periodic` jobs, see `ticketing_common.runtime`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("ticketing.periodic")


class Every:
    """Runs `job` every `seconds` until stopped; a failing run is logged and tried again."""

    def __init__(self, name: str, seconds: float, job: Callable[[], Awaitable[object]]) -> None:
        self.name = name
        self.seconds = seconds
        self.job = job
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        # Stopped by an event, never by cancellation: on 3.11 both wait_for and asyncio.timeout
        # can swallow a cancel that lands as their own timeout fires, and the loop runs on.
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                await asyncio.wait({stopping}, timeout=self.seconds)
                if self._stopping.is_set():
                    break
                try:
                    await self.job()
                except Exception as exc:  # keep going through an outage
                    log.warning("%s failed: %r", self.name, exc)
        finally:
            stopping.cancel()

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=self.name)

    def stopping(self) -> asyncio.Task[None] | None:
        """Ask the loop to end after the run in hand; returns its task, to wait for."""
        task, self._task = self._task, None
        self._stopping.set()
        return task

    async def stop(self, grace_seconds: float = 10.0) -> None:
        task = self.stopping()
        if task is None:
            return
        await asyncio.wait({task}, timeout=grace_seconds)
        if not task.done():
            task.cancel()
            await asyncio.wait({task})

"""Work a service runs on a timer while it is up: the outbox sweep, and sweeps and reconcilers
that repair what a lost message or a crash left behind. Every replica runs them; each job
must be idempotent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ticketing_common.runtime import Runtime

log = logging.getLogger("ticketing.periodic")


@dataclass(frozen=True)
class Periodic:
    """A service's job, declared once: its interval read from the running service's settings."""

    name: str
    seconds: Callable[[Runtime], float]
    job: Callable[[Runtime], Awaitable[object]]

    def timer(self, runtime: Runtime) -> Every:
        return Every(self.name, self.seconds(runtime), lambda: self.job(runtime))


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

"""Jobs a service runs on a timer while it is up: sweeps and reconcilers that repair what a
lost message or a crash left behind. Every replica runs them; each job must be idempotent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ticketing_common.runtime import Runtime

log = logging.getLogger("ticketing.periodic")


@dataclass(frozen=True)
class Periodic:
    name: str
    # The interval, read from the running service's settings.
    seconds: Callable[[Runtime], float]
    job: Callable[[Runtime], Awaitable[object]]


class PeriodicRunner:
    """Runs one job every `seconds` until stopped; a failing run is logged and tried again."""

    def __init__(self, periodic: Periodic, runtime: Runtime) -> None:
        self.periodic = periodic
        self.runtime = runtime
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        # Stopped by an event, not by cancellation (see OutboxRelay.run).
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                await asyncio.wait({stopping}, timeout=self.periodic.seconds(self.runtime))
                if self._stopping.is_set():
                    break
                try:
                    await self.periodic.job(self.runtime)
                except Exception as exc:
                    log.warning("%s failed: %r", self.periodic.name, exc)
        finally:
            stopping.cancel()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.periodic.name)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        task, self._task = self._task, None
        self._stopping.set()
        if task is None:
            return
        await asyncio.wait({task}, timeout=grace_seconds)
        if not task.done():
            task.cancel()
            await asyncio.wait({task})

"""The arq worker, run inside the service's event loop and kept alive through Redis outages."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from arq.connections import ArqRedis
from arq.worker import Worker

from ticketing_common.bus import EventBus
from ticketing_common.metrics import Metrics
from ticketing_expiration.jobs import job_functions
from ticketing_expiration.settings import Settings

log = logging.getLogger("ticketing.expiration.worker")


class JobRunner:
    """Runs due jobs. arq's poll loop ends at the first Redis error, so it is restarted here."""

    def __init__(self, pool: ArqRedis, bus: EventBus, settings: Settings, metrics: Metrics) -> None:
        self.pool = pool
        self.bus = bus
        self.settings = settings
        self.metrics = metrics
        self.worker: Worker | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0  # how often Redis (or anything else) stopped the worker

    def _new_worker(self) -> Worker:
        s = self.settings
        return Worker(
            functions=job_functions(s),
            redis_pool=self.pool,
            poll_delay=s.poll_delay_seconds,
            handle_signals=False,
            keep_result=s.job_keep_result_seconds,
            job_timeout=s.job_timeout_seconds,
            max_jobs=s.max_concurrent_jobs,
            ctx={
                "bus": self.bus,
                "metrics": self.metrics,
                "retry_max_seconds": s.job_retry_max_seconds,
            },
        )

    async def _run(self) -> None:
        delay = 0.2
        while not self._stopping:
            self.worker = self._new_worker()
            try:
                await self.worker.main()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.restarts += 1
                log.warning("job worker stopped (%r); restarting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                delay = 0.2

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="expiration-worker")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Take no new jobs, let those in progress finish (bounded), then stop polling.

        A job still running after the grace period is cancelled; arq leaves it queued, so it
        runs again after a restart (and a repeat publish is dropped by its message id).
        """
        self._stopping = True
        worker = self.worker
        if worker is not None:
            worker.allow_pick_jobs = False
            running = [t for t in worker.tasks.values() if not t.done()]
            if running:
                await asyncio.wait(running, timeout=self.settings.shutdown_grace_seconds)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if worker is not None:
            left = [t for t in worker.tasks.values() if not t.done()]
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.pool.delete(worker.health_check_key)

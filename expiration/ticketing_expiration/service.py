"""The expiration service, declared once: when an order is created, schedule its expiry (a
delayed arq job on Redis, run in-process) and announce `expiration:complete` when it is due.
No API: only /healthz and /readyz."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arq.connections import ArqRedis

from ticketing_common.runtime import Runtime
from ticketing_common.service import Service
from ticketing_expiration.events.handlers import HANDLERS
from ticketing_expiration.jobs import Scheduler, open_pool
from ticketing_expiration.settings import Settings
from ticketing_expiration.worker import JobRunner


def _settings(runtime: Runtime) -> Settings:
    assert isinstance(runtime.settings, Settings)
    return runtime.settings


@asynccontextmanager
async def redis_pool(runtime: Runtime) -> AsyncIterator[None]:
    pool = await open_pool(_settings(runtime))
    runtime.provide(pool)
    try:
        yield
    finally:
        await pool.aclose()


@asynccontextmanager
async def job_runner(runtime: Runtime) -> AsyncIterator[None]:
    """The arq worker, in-process; /readyz also needs Redis to answer and the worker to run.
    It stops before the bus closes: a job in progress still publishes."""
    assert runtime.bus is not None
    pool = runtime.get(ArqRedis)
    runner = JobRunner(pool, runtime.bus, _settings(runtime), runtime.metrics)
    runtime.provide(runner)

    async def worker_ready() -> bool:
        return runner.running and bool(await pool.ping())

    runner.start()
    runtime.checks.append(worker_ready)
    try:
        yield
    finally:
        await runner.stop()


def _scheduler(runtime: Runtime) -> Scheduler:
    return Scheduler(runtime.get(ArqRedis))


SERVICE: Service[Settings, Scheduler] = Service(
    settings=Settings,
    resources=[redis_pool, job_runner],
    context=_scheduler,
    handlers=HANDLERS,
)

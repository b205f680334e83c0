"""Wires the expiration service to NATS and Redis, runs its job worker in-process, and serves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arq.connections import ArqRedis
from fastapi import FastAPI
from starlette.types import Lifespan

from ticketing_common.runtime import Runtime
from ticketing_common.service import ListenerFactory, run_service, serve_forever
from ticketing_common.settings import load_settings
from ticketing_expiration.app import create_app
from ticketing_expiration.events.listeners import OrderCreatedListener
from ticketing_expiration.jobs import Scheduler, open_pool
from ticketing_expiration.settings import Settings
from ticketing_expiration.worker import JobRunner


def _watch_readiness(runtime: Runtime, pool: ArqRedis, runner: JobRunner) -> None:
    """/readyz also requires Redis to answer and the worker to be running."""

    async def worker_ready() -> bool:
        return runner.running and bool(await pool.ping())

    runtime.checks.append(worker_ready)


def expiration_lifespan(settings: Settings) -> Lifespan[FastAPI]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await open_pool(settings)
        try:
            scheduler = Scheduler(pool)
            listeners: list[ListenerFactory] = [lambda rt: OrderCreatedListener(rt, scheduler)]
            async with run_service(app, settings, listeners=listeners) as runtime:
                assert runtime.bus is not None
                runner = JobRunner(pool, runtime.bus, settings)
                runner.start()
                app.state.job_runner = runner
                _watch_readiness(runtime, pool, runner)
                try:
                    yield
                finally:
                    # Before the bus closes: a job in progress still publishes.
                    await runner.stop()
        finally:
            await pool.aclose()

    return lifespan


def build(settings: Settings) -> FastAPI:
    return create_app(settings, expiration_lifespan(settings))


def main() -> None:
    settings = load_settings(Settings)
    serve_forever(build(settings), settings)

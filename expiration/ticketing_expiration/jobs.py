"""The durable timer: one arq job per order, kept in Redis, that announces the order's expiry.

The job is the only record this service keeps (no database): scheduling it is idempotent by
job id (= order id), and publishing uses `Nats-Msg-Id = expiration:<orderId>` so that a job
run twice (a crash after publishing, before arq marked it done) is dropped by JetStream.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from arq import Retry
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import Function, func

from ticketing_common import tracing
from ticketing_common.bus import EventBus
from ticketing_common.events import ExpirationComplete
from ticketing_common.metrics import Metrics
from ticketing_expiration.settings import Settings

log = logging.getLogger("ticketing.expiration.jobs")

EXPIRE_ORDER = "expire_order"


def message_id(order_id: str) -> str:
    return f"expiration:{order_id}"


async def expire_order(
    ctx: dict[str, Any], order_id: str, trace: dict[str, str] | None = None
) -> None:
    """Publish `expiration:complete`, in the trace of the order that scheduled it (`trace`);
    when the bus refuses, arq runs the job again later."""
    bus: EventBus = ctx["bus"]
    event = ExpirationComplete(orderId=order_id)
    data = json.dumps(event.payload(), separators=(",", ":")).encode()
    attributes = {"ticketing.key": order_id, "ticketing.job_try": ctx.get("job_try", 1)}
    try:
        with tracing.continued(trace, EXPIRE_ORDER, attributes=attributes):
            # The event continues the job's trace (no extra headers with tracing off).
            traced: dict[str, Any] = {"headers": cause} if (cause := tracing.carrier()) else {}
            await bus.publish(str(event.subject), data, message_id(order_id), **traced)
    except Exception as exc:
        tries: int = ctx.get("job_try", 1)
        delay = min(0.5 * 2 ** (tries - 1), float(ctx.get("retry_max_seconds", 30.0)))
        log.warning("expiration of %s not published (try %d): %r", order_id, tries, exc)
        raise Retry(defer=delay) from exc
    # arq's `score`: when this try was due, epoch ms (`expiresAt` for the first; a retry's is
    # the end of its back-off). A job called outside a worker has none.
    due_ms = ctx.get("score")
    if due_ms is not None:
        metrics: Metrics = ctx["metrics"]
        late = max(0.0, datetime.now(UTC).timestamp() - due_ms / 1000)
        metrics.expiration_lateness.labels(str(event.subject)).observe(late)


def job_functions(settings: Settings) -> list[Function]:
    return [func(expire_order, name=EXPIRE_ORDER, max_tries=settings.job_max_tries)]


def redis_settings(settings: Settings) -> RedisSettings:
    """Redis from REDIS_URL, retried at start-up as long as other dependencies are."""
    redis = RedisSettings.from_dsn(settings.redis_url)
    redis.conn_retries = max(1, int(settings.startup_timeout_seconds))
    redis.conn_retry_delay = 1
    return redis


async def open_pool(settings: Settings) -> ArqRedis:
    return await create_pool(redis_settings(settings))


def _aware(moment: datetime) -> datetime:
    """arq reads a naive datetime as local time; SPEC times are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Scheduler:
    """Puts expiry jobs into Redis; the worker (possibly another replica) runs them."""

    def __init__(self, pool: ArqRedis) -> None:
        self.pool = pool

    async def schedule(self, order_id: str, at: datetime) -> bool:
        """Schedule the order's expiry; False when a job for it exists (or has just run)."""
        # The job carries the trace of the event that scheduled it, if any.
        trace: dict[str, Any] = {"trace": cause} if (cause := tracing.carrier()) else {}
        job = await self.pool.enqueue_job(
            EXPIRE_ORDER, order_id, _job_id=order_id, _defer_until=_aware(at), **trace
        )
        if job is None:
            log.info("expiration of %s already scheduled", order_id)
            return False
        log.info("expiration of %s scheduled at %s", order_id, at.isoformat())
        return True

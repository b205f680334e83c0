"""Expiration's pure pieces, no server: the handler registry, how an `order:created` becomes a
job (its id, function and due time), the job's publish and its retry back-off."""

import json
from datetime import UTC, datetime

import pytest
from arq import Retry
from pydantic import ValidationError

from ticketing_common.events import OrderCreated, OrderStatus
from ticketing_expiration.events.handlers import schedule_expiry
from ticketing_expiration.jobs import (
    EXPIRE_ORDER,
    Scheduler,
    expire_order,
    job_functions,
    message_id,
    redis_settings,
)
from ticketing_expiration.service import SERVICE
from ticketing_expiration.settings import Settings

ORDER = "0123456789abcdef01234567"
DUE = datetime(2026, 1, 1, 12, 15, tzinfo=UTC)


class FakePool:
    """Records what would be enqueued; a job id seen before is refused, as arq does."""

    def __init__(self) -> None:
        self.enqueued: list[tuple[tuple, dict]] = []

    async def enqueue_job(self, *args, **kwargs):
        if any(seen["_job_id"] == kwargs["_job_id"] for _, seen in self.enqueued):
            return None
        self.enqueued.append((args, kwargs))
        return object()


class FakeBus:
    def __init__(self, fails: bool = False) -> None:
        self.fails = fails
        self.published: list[tuple[str, bytes, str]] = []

    async def publish(self, subject: str, data: bytes, msg_id: str):
        if self.fails:
            raise ConnectionError("nats is down")
        self.published.append((subject, data, msg_id))


def test_the_service_listens_to_order_created_only():
    assert set(SERVICE.handlers) == {OrderCreated}
    assert SERVICE.handlers[OrderCreated].apply is schedule_expiry


def test_an_expiry_s_message_id_names_the_order():
    assert message_id(ORDER) == f"expiration:{ORDER}"


async def test_a_job_is_the_order_s_expiry_due_at_expires_at():
    pool = FakePool()
    assert await Scheduler(pool).schedule(ORDER, DUE) is True
    ((args, kwargs),) = pool.enqueued
    assert args == (EXPIRE_ORDER, ORDER)
    assert kwargs == {"_job_id": ORDER, "_defer_until": DUE}


async def test_a_due_time_without_a_zone_is_utc():
    pool = FakePool()
    await Scheduler(pool).schedule(ORDER, DUE.replace(tzinfo=None))
    assert pool.enqueued[0][1]["_defer_until"] == DUE


async def test_scheduling_an_order_twice_keeps_the_first_job():
    pool = FakePool()
    scheduler = Scheduler(pool)
    assert await scheduler.schedule(ORDER, DUE) is True
    assert await scheduler.schedule(ORDER, DUE.replace(hour=13)) is False
    assert [kwargs["_defer_until"] for _, kwargs in pool.enqueued] == [DUE]


async def test_order_created_schedules_the_order_s_expiry():
    pool = FakePool()
    event = OrderCreated(
        id=ORDER,
        version=0,
        status=OrderStatus.CREATED,
        userId="u1",
        expiresAt=DUE,
        ticket={"id": "t1", "price": 10},
    )
    await schedule_expiry(event, Scheduler(pool))
    ((args, kwargs),) = pool.enqueued
    assert args == (EXPIRE_ORDER, ORDER)
    assert kwargs["_defer_until"] == DUE


async def test_a_due_job_announces_expiration_complete_under_its_message_id():
    bus = FakeBus()
    await expire_order({"bus": bus}, ORDER)
    ((subject, data, msg_id),) = bus.published
    assert (subject, json.loads(data), msg_id) == (
        "expiration.complete",
        {"orderId": ORDER},
        f"expiration:{ORDER}",
    )


@pytest.mark.parametrize(("tries", "defer_ms"), [(1, 500), (3, 2000), (7, 30_000), (20, 30_000)])
async def test_a_refused_publish_is_retried_with_a_capped_back_off(tries, defer_ms):
    with pytest.raises(Retry) as raised:
        await expire_order({"bus": FakeBus(fails=True), "job_try": tries}, ORDER)
    assert raised.value.defer_score == defer_ms


def test_jobs_and_redis_follow_the_settings():
    settings = Settings(nats_url="nats://x:4222", redis_url="redis://x:6379", job_max_tries=7)
    (function,) = job_functions(settings)
    assert (function.name, function.max_tries) == (EXPIRE_ORDER, 7)
    redis = redis_settings(settings)
    assert (redis.host, redis.port) == ("x", 6379)
    assert redis.conn_retries == max(1, int(settings.startup_timeout_seconds))


@pytest.mark.parametrize("zero", ["poll_delay_seconds", "job_max_tries", "max_concurrent_jobs"])
def test_a_setting_that_would_stop_expiry_is_refused(zero):
    with pytest.raises(ValidationError):
        Settings(nats_url="nats://x:4222", redis_url="redis://x:6379", **{zero: 0})

"""Scheduling on `order:created`, firing `expiration:complete`, and surviving restarts."""

import json
from pathlib import Path

from arq.jobs import Job, JobStatus
from bson import ObjectId

from ticketing_common.embedded import free_port, start_redis
from ticketing_common.events import Subject
from ticketing_expiration.service import SERVICE
from ticketing_expiration.worker import JobRunner
from ticketing_testing import consumer_caught_up, eventually, serve

from .support import Expirations, fast_forward, in_seconds, order_created

SUBJECT = Subject.ORDER_CREATED
DURABLE = "expiration-order-created"


async def _status(pool, job_id):
    return await Job(job_id, pool).status()


async def _scheduled(pool, job_id):
    return await _status(pool, job_id) == JobStatus.deferred


async def test_an_order_created_schedules_a_job_whose_id_is_the_order_id(
    client, publish, acked, pool
):
    event = order_created(in_seconds(3600))
    seq = await publish(event)
    await eventually(lambda: acked(SUBJECT, seq))
    job = Job(event.id, pool)
    assert await job.status() == JobStatus.deferred
    info = await job.info()
    assert info.function == "expire_order"
    assert info.args == (event.id,)
    score = await pool.zscore(pool.default_queue_name, event.id)
    assert score == int(event.expiresAt.timestamp() * 1000)


async def test_scheduling_twice_leaves_one_job(client, publish, acked, pool):
    event = order_created(in_seconds(3600))
    await publish(event)
    later = order_created(in_seconds(7200), order_id=event.id)  # a repeat, even a changed one
    seq = await publish(later)
    await eventually(lambda: acked(SUBJECT, seq))
    assert await pool.zrange(pool.default_queue_name, 0, -1) == [event.id.encode()]
    score = await pool.zscore(pool.default_queue_name, event.id)
    assert score == int(event.expiresAt.timestamp() * 1000)


async def test_when_expires_at_passes_expiration_complete_arrives(client, publish, expirations):
    event = order_created(in_seconds(1))
    await publish(event)
    ((payload, msg_id),) = await eventually(lambda: expirations.of(event.id))
    assert payload == {"orderId": event.id}
    assert msg_id == f"expiration:{event.id}"


async def test_an_order_already_past_its_time_expires_at_once(client, publish, expirations):
    event = order_created(in_seconds(-60))
    await publish(event)
    await eventually(lambda: expirations.of(event.id))


async def test_a_job_outlives_a_restart_of_the_service(start, publish, acked, pool, expirations):
    event = order_created(in_seconds(3600))
    async with start():
        seq = await publish(event)
        await eventually(lambda: acked(SUBJECT, seq))
    # Stopped before the order's time: the job waits in Redis, nothing was published.
    assert await _scheduled(pool, event.id)
    assert await expirations.of(event.id) == []
    await fast_forward(pool, event.id)
    async with start():  # a new instance
        await eventually(lambda: expirations.of(event.id))
    assert await _status(pool, event.id) == JobStatus.complete


async def test_a_job_outlives_a_restart_of_redis(
    settings, publish, acked, expirations, tmp_path: Path
):
    from arq.connections import RedisSettings, create_pool

    port = free_port()
    redis = start_redis(tmp_path / "redis", port)
    try:
        app = SERVICE.build(settings.model_copy(update={"redis_url": redis.url}))
        async with serve(app) as client:
            pool = await create_pool(RedisSettings.from_dsn(redis.url))
            try:
                event = order_created(in_seconds(3600))
                seq = await publish(event)
                await eventually(lambda: acked(SUBJECT, seq))
                assert await _scheduled(pool, event.id)

                redis.stop()
                assert (await client.get("/readyz")).status_code == 503
                await eventually(lambda: _async(app.state.runtime.get(JobRunner).restarts > 0))
                redis = start_redis(tmp_path / "redis", port)  # same data directory (AOF)

                assert await eventually(lambda: _scheduled(pool, event.id))
                await eventually(lambda: _ready(client))
                # The worker lived through the outage and runs the job when it is due.
                await fast_forward(pool, event.id)
                await eventually(lambda: expirations.of(event.id))
            finally:
                await pool.aclose()
    finally:
        redis.stop()


async def _async(value):
    return value


async def _ready(client):
    return (await client.get("/readyz")).status_code == 200


async def test_healthz_and_readyz(client):
    health = await client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_no_api_routes(client):
    response = await client.get("/api/expiration/anything")
    assert response.status_code == 404
    assert response.json() == {"errors": [{"message": "Not Found"}]}


async def test_a_job_due_while_nats_is_down_publishes_once_it_is_back(settings, pool, tmp_path):
    from ticketing_common.bus import EventBus
    from ticketing_common.embedded import start_nats

    port = free_port()
    nats = start_nats(tmp_path / "nats", port)
    try:
        async with serve(SERVICE.build(settings.model_copy(update={"nats_url": nats.url}))):
            bus = await EventBus.connect(nats.url, name="expiration-test", stream="TICKETING")
            event = order_created(in_seconds(3600))
            # Published on this test's own NATS (the one it stops), with a fresh message id.
            data = json.dumps(event.payload()).encode()
            seq = (await bus.publish(str(event.subject), data, str(ObjectId()))).seq
            await eventually(lambda: consumer_caught_up(bus, DURABLE, seq))
            await bus.close()

            nats.stop()
            await fast_forward(pool, event.id)
            # The job starts while the bus is down ...
            await eventually(lambda: pool.exists(f"arq:in-progress:{event.id}"))
            nats = start_nats(tmp_path / "nats", port)  # same JetStream store
            # ... and its event still goes out, exactly once.
            bus = await EventBus.connect(nats.url, name="expiration-test", stream="TICKETING")
            expirations = Expirations()
            await expirations.start(bus)
            try:
                await eventually(lambda: _status_is(pool, event.id, JobStatus.complete), within=60)
                assert await eventually(lambda: expirations.of(event.id)) == [
                    ({"orderId": event.id}, f"expiration:{event.id}")
                ]
            finally:
                await expirations.stop()
                await bus.close()
    finally:
        nats.stop()


async def _status_is(pool, job_id, status):
    return await _status(pool, job_id) == status


async def test_a_publish_that_fails_leaves_the_job_to_be_retried_later(nats_url):
    import pytest
    from arq import Retry

    from ticketing_common.bus import EventBus
    from ticketing_expiration.jobs import expire_order

    bus = await EventBus.connect(nats_url, name="expiration-test", stream="TICKETING")
    await bus.close()  # every publish now fails at once
    with pytest.raises(Retry) as raised:
        await expire_order({"bus": bus, "job_try": 3, "retry_max_seconds": 30}, "o1")
    assert raised.value.defer_score == 2000  # 0.5 s doubled per try

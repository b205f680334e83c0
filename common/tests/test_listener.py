"""The listener base on the real bus: ack, redelivery with back-off, dead letters, replay."""

import json

import pytest

from ticketing_common.bus import EventBus
from ticketing_common.deadletters import dead_letters, replay
from ticketing_common.events import ExpirationComplete
from ticketing_common.listener import Listener, Retry
from ticketing_common.runtime import Runtime
from ticketing_common.settings import NatsSettings, ServiceSettings
from ticketing_testing import eventually


class Settings(ServiceSettings, NatsSettings):
    service_name: str = "probe"


class Recorder(Listener[ExpirationComplete]):
    """Fails its first `failures` deliveries of each event, then records it."""

    failures = 0
    retry = False

    def __init__(self, runtime):
        super().__init__(runtime, ExpirationComplete, self.handle, ExpirationComplete.key)
        self.seen = []
        self.applied = []

    async def handle(self, event):
        self.seen.append(event.orderId)
        if self.seen.count(event.orderId) <= self.failures:
            raise Retry("not yet") if self.retry else RuntimeError("boom")
        self.applied.append(event.orderId)


@pytest.fixture
async def bus(nats_url):
    bus = await EventBus.connect(nats_url, name="listener-test", stream="TICKETING")
    yield bus
    await bus.close()


def _runtime(bus, **settings):
    values = {"nats_url": "nats://unused", "listener_backoff_seconds": 0.05, **settings}
    return Runtime(Settings(**values), bus=bus)


async def _publish(bus, order_id, msg_id=None):
    data = json.dumps(ExpirationComplete(orderId=order_id).payload()).encode()
    await bus.publish("expiration.complete", data, msg_id or order_id)


async def _consumer(bus, listener):
    return await bus.js.consumer_info(bus.stream, listener.durable)


async def test_a_handled_event_is_acked_once(bus):
    listener = Recorder(_runtime(bus))
    await listener.start()
    try:
        await _publish(bus, "o1")
        await eventually(lambda: _async(listener.applied == ["o1"]))
        info = await eventually(lambda: _acked(bus, listener))
        assert info.num_redelivered == 0
    finally:
        await listener.stop()


async def test_a_failing_event_is_redelivered_and_then_applied(bus):
    listener = Recorder(_runtime(bus))
    listener.failures = 2
    await listener.start()
    try:
        await _publish(bus, "o2")
        await eventually(lambda: _async(listener.applied == ["o2"]))
        assert listener.seen == ["o2", "o2", "o2"]
        await eventually(lambda: _acked(bus, listener))
    finally:
        await listener.stop()


async def test_a_listener_that_fails_n_times_leaves_a_dead_letter(bus):
    listener = Recorder(_runtime(bus, listener_max_deliver=3))
    listener.failures = 99
    await listener.start()
    try:
        await _publish(bus, "o3")
        records = await eventually(lambda: dead_letters(bus, "probe"))
        assert len(records) == 1
        record = records[0]
        assert record["subject"] == "expiration.complete"
        assert json.loads(record["data"]) == {"orderId": "o3"}
        assert record["deliveries"] == 3
        assert "boom" in record["error"]
        assert record["consumer"] == "probe-expiration-complete"
        assert listener.seen == ["o3"] * 3
        await eventually(lambda: _acked(bus, listener))
    finally:
        await listener.stop()


async def test_retry_leads_to_a_dead_letter_too_and_replay_applies_it(bus):
    listener = Recorder(_runtime(bus, listener_max_deliver=2))
    listener.failures = 2
    listener.retry = True
    await listener.start()
    try:
        await _publish(bus, "o4")
        (record,) = await eventually(lambda: dead_letters(bus, "probe"))
        assert "not yet" in record["error"]
        await replay(bus, record["seq"])
        await eventually(lambda: _async(listener.applied == ["o4"]))
    finally:
        await listener.stop()


async def test_a_malformed_event_goes_straight_to_dead_letters(bus):
    listener = Recorder(_runtime(bus))
    await listener.start()
    try:
        await bus.publish("expiration.complete", b'{"nope": 1}', "bad-1")
        (record,) = await eventually(lambda: dead_letters(bus, "probe"))
        assert record["deliveries"] == 1
        assert "malformed" in record["error"]
        assert listener.seen == []
    finally:
        await listener.stop()


async def test_replicas_share_the_work_and_each_event_is_applied_once(bus):
    runtime = _runtime(bus)
    first, second = Recorder(runtime), Recorder(runtime)
    await first.start()
    await second.start()
    try:
        for n in range(20):
            await _publish(bus, f"r{n}")
        await eventually(lambda: _async(len(first.applied) + len(second.applied) == 20))
        assert sorted(first.applied + second.applied) == sorted(f"r{n}" for n in range(20))
    finally:
        await first.stop()
        await second.stop()


async def _async(value):
    return value


async def _acked(bus, listener):
    info = await _consumer(bus, listener)
    return info if info.num_ack_pending == 0 and info.num_pending == 0 else None

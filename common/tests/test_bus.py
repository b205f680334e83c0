"""The streams: created with their limits, and brought up to date when the settings change."""

from nats.js.api import StorageType, StreamConfig

from ticketing_common.bus import DEAD_LETTER_STREAM, EventBus, StreamLimits
from ticketing_common.events import STREAM_SUBJECTS


async def _config(bus, name):
    return (await bus.js.stream_info(name)).config


async def test_streams_are_created_with_bounded_history(nats_url):
    bus = await EventBus.connect(nats_url, name="bus-test", stream="TICKETING")
    try:
        events, letters = await _config(bus, "TICKETING"), await _config(bus, DEAD_LETTER_STREAM)
    finally:
        await bus.close()
    assert (events.max_age, events.max_bytes) == (7 * 86400, 1 << 30)
    assert events.duplicate_window == 3600
    assert (letters.max_age, letters.max_bytes) == (30 * 86400, 256 << 20)
    assert sorted(events.subjects) == sorted(STREAM_SUBJECTS)


async def test_a_changed_limit_updates_the_running_stream_on_the_next_start(nats_url):
    first = await EventBus.connect(nats_url, name="bus-test", stream="TICKETING")
    await first.publish("ticket.created", b"{}", "kept")
    await first.close()
    limits = StreamLimits(
        max_age_seconds=3 * 86400, max_bytes=64 << 20, dead_letter_max_bytes=1 << 20
    )

    second = await EventBus.connect(nats_url, name="bus-test", stream="TICKETING", limits=limits)
    try:
        events, letters = (
            await _config(second, "TICKETING"),
            await _config(second, DEAD_LETTER_STREAM),
        )
        messages = (await second.js.stream_info("TICKETING")).state.messages
    finally:
        await second.close()
    assert (events.max_age, events.max_bytes) == (3 * 86400, 64 << 20)
    assert letters.max_bytes == 1 << 20
    assert messages == 1  # updated in place: nothing was lost


async def test_a_stream_made_with_fewer_subjects_gets_the_new_ones(nats_url):
    bus = await EventBus.connect(nats_url, name="bus-test", stream="TICKETING")
    await bus.js.delete_stream("TICKETING")
    old = StreamConfig(name="TICKETING", subjects=["ticket.*", "order.*"], storage=StorageType.FILE)
    await bus.js.add_stream(old)
    await bus.ensure_streams()
    try:
        subjects = (await _config(bus, "TICKETING")).subjects
    finally:
        await bus.close()
    assert sorted(subjects) == sorted(STREAM_SUBJECTS)

"""The hand tool against the real embedded NATS: what it publishes, it receives."""

import asyncio
import io
import json

import pytest
from bson import ObjectId

from nats_test.cli import UsageError, listening, parse_event, publish_event, run
from ticketing_common.bus import EventBus

TICKET = {
    "id": str(ObjectId()),
    "version": 0,
    "title": "concert",
    "price": 20,
    "userId": str(ObjectId()),
}


@pytest.fixture
async def bus(nats_url):
    events = await EventBus.connect(nats_url, name="nats-test-tests", stream="TICKETING")
    yield events
    await events.close()


async def next_line(out: io.StringIO, prefix: str) -> str:
    """The first printed line starting with `prefix`, once it has been printed."""
    while True:
        found = [line for line in out.getvalue().splitlines() if line.startswith(prefix)]
        if found:
            return found[0]
        await asyncio.sleep(0.02)


async def test_what_it_publishes_it_receives(bus):
    async with listening(bus, ["ticket:created"]) as events:
        event, ack = await publish_event(bus, "ticket:created", json.dumps(TICKET))
        assert event.subject == "ticket.created"
        received = await asyncio.wait_for(events.get(), 15)
    assert received.seq == ack.seq
    assert received.subject == "ticket.created"
    assert json.loads(received.data) == {**TICKET, "price": 20.0}
    assert received.line() == f"#{ack.seq} ticket.created {received.data}"


async def test_listening_to_everything_sees_each_subject_in_order(bus):
    order = {
        "id": str(ObjectId()),
        "version": 1,
        "ticket": {"id": TICKET["id"]},
    }
    async with listening(bus) as events:
        _, first = await publish_event(bus, "ticket.created", json.dumps(TICKET))
        _, second = await publish_event(bus, "order:cancelled", json.dumps(order))
        got = [await asyncio.wait_for(events.get(), 15) for _ in range(2)]
    assert [(r.seq, r.subject) for r in got] == [
        (first.seq, "ticket.created"),
        (second.seq, "order.cancelled"),
    ]


async def test_each_publish_is_a_new_message(bus):
    _, first = await publish_event(bus, "ticket.created", json.dumps(TICKET))
    _, again = await publish_event(bus, "ticket.created", json.dumps(TICKET))
    assert again.seq == first.seq + 1 and not again.duplicate


@pytest.mark.parametrize(
    ("subject", "payload"),
    [
        ("ticket:bought", json.dumps(TICKET)),
        ("ticket:created", json.dumps({**TICKET, "price": "lots"})),
        ("ticket:created", json.dumps({"id": "x"})),
        ("ticket:created", "not json"),
    ],
)
def test_payloads_that_break_the_contract_are_refused(subject, payload):
    with pytest.raises(UsageError):
        parse_event(subject, payload)


async def test_the_command_line_publishes_and_listens(nats_url):
    out = io.StringIO()
    listener = asyncio.create_task(run(["--nats-url", nats_url, "listen", "--all"], out))
    try:
        published = io.StringIO()
        code = await run(
            ["--nats-url", nats_url, "publish", "ticket:created", json.dumps(TICKET)], published
        )
        assert code == 0
        assert published.getvalue().startswith("published #1 ticket.created {")
        line = await asyncio.wait_for(next_line(out, "#1 "), 15)
    finally:
        listener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await listener
    seq, subject, payload = line.split(" ", 2)
    assert (seq, subject) == ("#1", "ticket.created")
    assert json.loads(payload)["id"] == TICKET["id"]


async def test_the_command_line_refuses_a_bad_payload_and_publishes_nothing(nats_url, bus, capsys):
    code = await run(["--nats-url", nats_url, "publish", "ticket:created", '{"id": 1}'])
    assert code == 2
    assert "payload does not fit ticket.created" in capsys.readouterr().err
    assert (await bus.js.stream_info("TICKETING")).state.messages == 0

"""Publish and watch Ticketing events by hand, with the services' own event contracts.

Usage:
  python -m nats_test publish SUBJECT PAYLOAD
      Check PAYLOAD (JSON) against SUBJECT's event model and publish it with a fresh
      Nats-Msg-Id, e.g.
        python -m nats_test publish ticket:created \\
          '{"id":"6a0c0ffee0c0ffee0c0ffee0","version":0,"title":"concert","price":20,
            "userId":"6a0c0ffee0c0ffee0c0ffee1"}'
      Prints `published #SEQ SUBJECT PAYLOAD`. Exit code 2 if the subject is unknown or the
      payload breaks the contract (nothing is published then).
  python -m nats_test listen [SUBJECT ...] [--all]
      Print every event as it arrives, one line each: `#SEQ SUBJECT PAYLOAD` (SEQ is the
      stream sequence). No SUBJECT means all of them; wildcards such as `order.*` work.
      An ephemeral consumer: it takes nothing away from the services' durable consumers.
      `--all` starts from the first event still in the stream instead of the next new one.
      Ctrl-C stops it.

Subjects may be written as in the SPEC (`ticket:created`) or as on NATS (`ticket.created`).
Options (before the command): `--nats-url` (default `$NATS_URL` or nats://127.0.0.1:4222),
`--stream` (default `$NATS_STREAM` or TICKETING).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TextIO

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck
from pydantic import ValidationError

from ticketing_common.bus import EventBus
from ticketing_common.events import EVENT_TYPES, STREAM_SUBJECTS, Event, Subject


class UsageError(Exception):
    """A subject or payload the contracts do not allow."""


def nats_subject(name: str) -> str:
    """`ticket:created` (SPEC spelling) and `ticket.created` (NATS spelling) are the same."""
    return name.strip().replace(":", ".")


def parse_event(subject: str, payload: str) -> Event:
    """The event `payload` describes, checked against `subject`'s contract."""
    name = nats_subject(subject)
    try:
        event_type = EVENT_TYPES[Subject(name)]
    except ValueError:
        known = ", ".join(s.value for s in Subject)
        raise UsageError(f"unknown subject {subject!r}; one of: {known}") from None
    try:
        return event_type.model_validate_json(payload)
    except ValidationError as exc:
        raise UsageError(f"payload does not fit {name}: {exc}") from None


async def publish_event(bus: EventBus, subject: str, payload: str) -> tuple[Event, PubAck]:
    """Validate and publish once, under a fresh message id (so it is never a duplicate)."""
    event = parse_event(subject, payload)
    data = json.dumps(event.payload(), separators=(",", ":")).encode()
    ack = await bus.publish(str(event.subject), data, f"nats-test:{uuid.uuid4().hex}")
    return event, ack


@dataclass(frozen=True)
class Received:
    seq: int
    subject: str
    data: str

    def line(self) -> str:
        return f"#{self.seq} {self.subject} {self.data}"


@asynccontextmanager
async def listening(
    bus: EventBus, subjects: Sequence[str] = (), *, replay: bool = False
) -> AsyncIterator[asyncio.Queue[Received]]:
    """An ephemeral consumer of `subjects` (all by default) feeding a queue; ready on entry."""
    filters = [nats_subject(s) for s in subjects] or list(STREAM_SUBJECTS)
    queue: asyncio.Queue[Received] = asyncio.Queue()

    async def on_message(msg: Msg) -> None:
        seq = msg.metadata.sequence.stream if msg.metadata else 0
        queue.put_nowait(Received(seq, msg.subject, msg.data.decode(errors="replace")))

    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.ALL if replay else DeliverPolicy.NEW,
        filter_subjects=filters if len(filters) > 1 else None,
        inactive_threshold=30.0,
    )
    sub = await bus.js.subscribe(
        filters[0] if len(filters) == 1 else "", stream=bus.stream, config=config, cb=on_message
    )
    try:
        yield queue
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="python -m nats_test",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    cli.add_argument("--stream", default=os.environ.get("NATS_STREAM", "TICKETING"))
    commands = cli.add_subparsers(dest="command", required=True)
    pub = commands.add_parser("publish", help="check an event against its contract, publish it")
    pub.add_argument("subject")
    pub.add_argument("payload", help="the event as JSON")
    sub = commands.add_parser("listen", help="print events as they arrive")
    sub.add_argument("subjects", nargs="*", metavar="subject")
    sub.add_argument("--all", action="store_true", help="start from the oldest stored event")
    return cli


async def run(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """The command line, in-process: returns the exit code (`listen` runs until cancelled)."""
    out = out or sys.stdout
    args = parser().parse_args(argv)
    if args.command == "publish":
        try:
            parse_event(args.subject, args.payload)  # refuse before connecting
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    bus = await EventBus.connect(args.nats_url, name="nats-test", stream=args.stream)
    try:
        if args.command == "publish":
            event, ack = await publish_event(bus, args.subject, args.payload)
            payload = json.dumps(event.payload(), separators=(",", ":"))
            print(f"published #{ack.seq} {event.subject} {payload}", file=out, flush=True)
            return 0
        async with listening(bus, args.subjects, replay=args.all) as events:
            print(f"listening on {', '.join(args.subjects) or 'every subject'}", file=out)
            while True:
                print((await events.get()).line(), file=out, flush=True)
    finally:
        await bus.close()


def main(argv: Sequence[str] | None = None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(asyncio.run(run(argv)))

"""List and replay dead letters: `python -m ticketing_common.deadletters list|replay`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

from nats.js.errors import NotFoundError

from ticketing_common.bus import DEAD_LETTER_PREFIX, DEAD_LETTER_STREAM, EventBus


async def dead_letters(bus: EventBus, service: str | None = None) -> list[dict[str, Any]]:
    """Every dead letter (of one service, if named), oldest first, each with its `seq`."""
    state = (await bus.js.stream_info(DEAD_LETTER_STREAM)).state
    records: list[dict[str, Any]] = []
    for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
        try:
            stored = await bus.js.get_msg(DEAD_LETTER_STREAM, seq)
        except NotFoundError:
            continue
        if service and stored.subject != f"{DEAD_LETTER_PREFIX}.{service}":
            continue
        records.append({**json.loads(stored.data or b"{}"), "seq": seq})
    return records


async def replay(bus: EventBus, seq: int) -> dict[str, Any]:
    """Publish a dead letter's event again; listeners are idempotent, so others ignore it."""
    stored = await bus.js.get_msg(DEAD_LETTER_STREAM, seq)
    record: dict[str, Any] = json.loads(stored.data or b"{}")
    await bus.publish(record["subject"], record["data"].encode(), f"replay:{seq}")
    return record


async def _main(args: argparse.Namespace) -> None:
    bus = await EventBus.connect(args.nats_url, name="deadletters", stream=args.stream)
    try:
        if args.command == "list":
            for record in await dead_letters(bus, args.service):
                print(json.dumps(record))
        else:
            record = await replay(bus, args.seq)
            print(f"replayed {record['subject']} from dead letter {args.seq}")
    finally:
        await bus.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--stream", default=os.environ.get("NATS_STREAM", "TICKETING"))
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="print every dead letter as a JSON line")
    listing.add_argument("--service")
    again = commands.add_parser("replay", help="publish a dead letter's event again")
    again.add_argument("seq", type=int)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()

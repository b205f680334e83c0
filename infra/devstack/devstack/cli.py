"""`ticketing up | status | down | logs | trace`: the dev runner's command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import nats
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo, StreamInfo
from nats.js.errors import NotFoundError

from devstack import traces
from devstack.logs import compact, tail
from devstack.processes import is_alive
from devstack.stack import Stack, StackError, terminate_records
from devstack.state import clear_state, data_dir, read_state
from ticketing_common.bus import DEAD_LETTER_STREAM
from ticketing_common.spanfile import read_spans, traces_about
from ticketing_common.tracing import TRACES_DIR

NAME_WIDTH = 10
NATS_STREAM = "TICKETING"  # the services' default; `NATS_STREAM` names another
_print_lock = threading.Lock()


class Stop(BaseException):
    """A stop signal (Ctrl-C, SIGTERM, SIGHUP) reached `up`."""


def render(name: str, line: str) -> str:
    """`name | line`, each line of it; JSON log lines compact (`level message [requestId]`)."""
    prefix = f"{name:<{NAME_WIDTH}} | "
    return "\n".join(prefix + text for text in compact(line).splitlines() or [""])


def show(name: str, line: str) -> None:
    text = render(name, line)
    with _print_lock:
        print(text, flush=True)


def browser_url(url: str) -> str:
    return url.replace("://127.0.0.1:", "://localhost:")


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def up(args: argparse.Namespace) -> int:
    def stop_signal(signum: int, frame: FrameType | None) -> None:
        raise Stop

    # SIGINT too: started in the background of a script, Python would inherit it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop_signal)
    stack = Stack(Path.cwd(), ingress_port=args.port, log=show)
    failure: StackError | None = None
    try:
        stack.start()
        rows = [("part", "pid", "address")]
        rows += [(p.name, str(p.process.pid), browser_url(p.url)) for p in stack.parts]
        with _print_lock:
            print("\n" + table(rows))
            if stack.skipped:
                print(f"not runnable yet, skipped: {', '.join(stack.skipped)}")
            print(f"logs in {stack.data / 'logs'}; Ctrl-C or `ticketing down` stops everything")
            print(f"\nTicketing is running at {browser_url(stack.url)}\n", flush=True)
        watch(stack)
    except (KeyboardInterrupt, Stop):
        print("\nstopping...", flush=True)
    except StackError as exc:
        failure = exc
    finally:
        # A second Ctrl-C must not leave half the stack running.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        stack.stop()
    if failure is not None:
        print(f"ticketing up failed: {failure}", file=sys.stderr, flush=True)
        return 1
    print("stopped", flush=True)
    return 0


def watch(stack: Stack) -> None:
    """Run until interrupted; the stack starts again, and says so, each part that exits."""
    while True:
        time.sleep(0.5)


def status(args: argparse.Namespace) -> int:
    state = read_state(Path.cwd())
    if state is None:
        print("Ticketing is not running here (no .data/run.json)")
        return 1
    owner = is_alive(state["pid"], state.get("started"))
    rows = [("part", "pid", "state", "restarts", "last exit", "address")]
    rows.append(("ticketing up", str(state["pid"]), "alive" if owner else "gone", "", "", ""))
    for part in state["parts"]:
        alive = is_alive(part["pid"], part.get("started"))
        rows.append(
            (
                part["name"],
                str(part["pid"]),
                "alive" if alive else "gone",
                str(part.get("restarts", 0)),
                part.get("last_exit") or "-",
                part["url"],
            )
        )
    print(table(rows))
    if state.get("skipped"):
        print(f"skipped: {', '.join(state['skipped'])}")
    nats_part = next((p for p in state["parts"] if p["name"] == "nats"), None)
    if nats_part is not None:
        stream = os.environ.get("NATS_STREAM") or NATS_STREAM
        print("\n" + "\n".join(bus_report(nats_part["url"], stream)))
    if state.get("url"):
        print(f"\nTicketing {'is' if owner else 'was'} running at {browser_url(state['url'])}")
    return 0 if owner else 1


def bus_report(url: str, stream: str, timeout: float = 10.0) -> list[str]:
    """The event stream's state, its consumers' backlogs and the dead letters, read from NATS;
    one line instead when NATS does not answer (status must work while parts are down)."""
    errors: list[Exception] = []
    try:
        return asyncio.run(asyncio.wait_for(_bus_report(url, stream, errors), timeout))
    except Exception as exc:  # whatever went wrong, one line, not a traceback
        cause = errors[-1] if errors else exc  # "connection refused" says more than "no servers"
        return [f"NATS at {url} is not reachable: {str(cause) or type(cause).__name__}"]


async def _bus_report(url: str, stream: str, errors: list[Exception]) -> list[str]:
    async def note(exc: Exception) -> None:
        errors.append(exc)

    # One attempt: a server that is down makes nats-py retry forever unless told otherwise.
    nc = await nats.connect(
        url,
        name="ticketing-status",
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.1,
        connect_timeout=3,
        error_cb=note,
    )
    try:
        js = nc.jetstream(timeout=5)
        lines = await _stream_lines(js, stream)
        try:
            dead = (await js.stream_info(DEAD_LETTER_STREAM)).state.messages
        except NotFoundError:
            dead = 0
        return [*lines, f"dead letters ({DEAD_LETTER_STREAM}): {dead}"]
    finally:
        await nc.close()


async def _stream_lines(js: JetStreamContext, stream: str) -> list[str]:
    """The stream's size and limits, then each durable's backlog: what shows a stuck listener."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return [f"NATS stream {stream}: not created yet (no service has connected)"]
    rows = [["consumer", "pending", "ack pending", "redelivered"]]
    for consumer in sorted(await _durables(js, stream), key=lambda c: c.name):
        counts = (consumer.num_pending, consumer.num_ack_pending, consumer.num_redelivered)
        rows.append([consumer.name, *(str(n or 0) for n in counts)])
    consumers = table(rows) if len(rows) > 1 else "no durable consumers"
    return [stream_summary(info), consumers]


async def _durables(js: JetStreamContext, stream: str) -> list[ConsumerInfo]:
    """Every durable consumer of `stream` (the server lists them 256 at a time)."""
    found: list[ConsumerInfo] = []
    while page := await js.consumers_info(stream, offset=len(found) or None):
        found += page
        if len(page) < 256:
            break
    return [c for c in found if c.config.durable_name]


def stream_summary(info: StreamInfo) -> str:
    """One line: how much the stream holds, and the limits that decide how long it keeps it."""
    config, state = info.config, info.state
    limits = ", ".join(
        [
            f"max_age {duration(config.max_age)}",
            f"max_bytes {size(config.max_bytes)}",
            f"duplicate window {duration(config.duplicate_window)}",
        ]
    )
    return (
        f"NATS stream {config.name}: {state.messages} messages ({size(state.bytes)}); "
        f"limits: {limits}"
    )


def duration(seconds: float | None) -> str:
    """`7d`, `1h`, `90s`; 0 or None is no limit, as NATS means it."""
    if not seconds:
        return "unlimited"
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{seconds / length:g}{unit}"
    return f"{seconds:g}s"


def size(count: int | None) -> str:
    """`512 B`, `1.5 KiB`, `1 GiB`; -1 or None is no limit, as NATS means it."""
    if count is None or count < 0:
        return "unlimited"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.4g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def down(args: argparse.Namespace) -> int:
    root = Path.cwd()
    state = read_state(root)
    if state is None:
        print("Ticketing is not running here")
        return 0
    owner: int = state["pid"]
    if is_alive(owner, state.get("started")):
        os.kill(owner, signal.SIGTERM)  # `up` stops its parts in order, then exits
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and is_alive(owner, state.get("started")):
            time.sleep(0.1)
        state = read_state(root) or state  # the pids of parts it restarted meanwhile
    leftovers = [p for p in state["parts"] if is_alive(p["pid"], p.get("started"))]
    if leftovers:
        print(f"stopping {', '.join(p['name'] for p in leftovers)}")
        terminate_records(leftovers)
    clear_state(root)
    print("stopped")
    return 0


def logs(args: argparse.Namespace) -> int:
    folder = data_dir(Path.cwd()) / "logs"
    names = [args.name] if args.name else sorted(p.stem for p in folder.glob("*.log"))
    if not names:
        print(f"no logs in {folder}")
        return 1
    for name in names:
        for line in tail(folder / f"{name}.log", args.lines).splitlines():
            print(f"{name:<{NAME_WIDTH}} | {line}")
    return 0


def trace(args: argparse.Namespace) -> int:
    """Print the traces that carried events about an order or a ticket (or one trace by id)."""
    folder = Path(os.environ.get(TRACES_DIR) or data_dir(Path.cwd()) / "traces")
    spans = read_spans(folder)
    found = traces_about(spans, args.id)
    if not found:
        print(f"no trace about {args.id} in {folder} (tracing off, or not yet written)")
        return 1
    print("\n\n".join("\n".join(traces.render(spans, trace_id)) for trace_id in found))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ticketing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start everything here and stream the logs")
    start.add_argument("--port", type=int, help="ingress port (default $INGRESS_PORT or 8080)")
    start.set_defaults(run=up)
    commands.add_parser(
        "status", help="what runs, with pids and addresses, and the event stream's backlog"
    ).set_defaults(run=status)
    stop = commands.add_parser("down", help="stop what `ticketing up` started here")
    stop.add_argument("--timeout", type=float, default=60.0)
    stop.set_defaults(run=down)
    tail = commands.add_parser("logs", help="the end of the logs (all, or one part's)")
    tail.add_argument("name", nargs="?")
    tail.add_argument("-n", "--lines", type=int, default=40)
    tail.set_defaults(run=logs)
    spans = commands.add_parser(
        "trace", help="the span trees of an order's (or ticket's) traces, with timings"
    )
    spans.add_argument("id", help="an order id, a ticket id or a trace id")
    spans.set_defaults(run=trace)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

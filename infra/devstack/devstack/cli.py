"""`ticketing up | status | down | logs`: the dev runner's command line (`make run` is `up`)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from devstack.stack import (
    Stack,
    StackError,
    compact,
    is_alive,
    read_state,
    tail,
    terminate_records,
)

NAME_WIDTH = 10
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


def table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
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
    """Run until interrupted; say so when a part dies on its own."""
    reported: set[str] = set()
    while True:
        time.sleep(0.5)
        for part in stack.parts:
            code = part.process.poll()
            if code is not None and part.name not in reported:
                reported.add(part.name)
                show("devstack", f"{part.name} exited with code {code}; see {part.log_path}")


def status(args: argparse.Namespace) -> int:
    state = read_state(Path.cwd())
    if state is None:
        print("Ticketing is not running here (no .data/run.json)")
        return 1
    owner = is_alive(state["pid"], state.get("started"))
    rows = [("part", "pid", "state", "address")]
    rows.append(("ticketing up", str(state["pid"]), "alive" if owner else "gone", ""))
    for part in state["parts"]:
        alive = is_alive(part["pid"], part.get("started"))
        rows.append((part["name"], str(part["pid"]), "alive" if alive else "gone", part["url"]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if state.get("skipped"):
        print(f"skipped: {', '.join(state['skipped'])}")
    if state.get("url"):
        print(f"\nTicketing {'is' if owner else 'was'} running at {browser_url(state['url'])}")
    return 0 if owner else 1


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
    leftovers = [p for p in state["parts"] if is_alive(p["pid"], p.get("started"))]
    if leftovers:
        print(f"stopping {', '.join(p['name'] for p in leftovers)}")
        terminate_records(leftovers)
    (root / ".data" / "run.json").unlink(missing_ok=True)
    print("stopped")
    return 0


def logs(args: argparse.Namespace) -> int:
    folder = Path.cwd() / ".data" / "logs"
    names = [args.name] if args.name else sorted(p.stem for p in folder.glob("*.log"))
    if not names:
        print(f"no logs in {folder}")
        return 1
    for name in names:
        for line in tail(folder / f"{name}.log", args.lines).splitlines():
            print(f"{name:<{NAME_WIDTH}} | {line}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ticketing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start everything here and stream the logs")
    start.add_argument("--port", type=int, help="ingress port (default $INGRESS_PORT or 8080)")
    start.set_defaults(run=up)
    commands.add_parser("status", help="what runs, with pids and addresses").set_defaults(
        run=status
    )
    stop = commands.add_parser("down", help="stop what `ticketing up` started here")
    stop.add_argument("--timeout", type=float, default=60.0)
    stop.set_defaults(run=down)
    tail = commands.add_parser("logs", help="the end of the logs (all, or one part's)")
    tail.add_argument("name", nargs="?")
    tail.add_argument("-n", "--lines", type=int, default=40)
    tail.set_defaults(run=logs)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Each part's output to `.data/logs/` and the terminal, line by line, and read back readable."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

LogSink = Callable[[str, str], None]
"""Receives (part name, one line of its output)."""

# nx-27017 logs every command at INFO, and has no option to say less; the file keeps them.
CHATTY = re.compile(r" - (INFO|DEBUG) - ")


def pump(
    name: str, path: Path, sink: LogSink | None, *, append: bool = False
) -> tuple[int, threading.Thread]:
    """A pipe whose lines go to the file `path` (after what it holds, with `append`) and to
    `sink`, and the thread that copies them; give the child the write end (and close it here
    once the child has it)."""
    read_fd, write_fd = os.pipe()
    out = path.open("ab" if append else "wb")

    def copy() -> None:
        with os.fdopen(read_fd, "rb") as pipe, out:
            for raw in pipe:
                out.write(raw)
                out.flush()
                line = raw.decode(errors="replace").rstrip("\r\n")
                if sink is not None and not (name == "mongo" and CHATTY.search(line)):
                    # A sink that fails (a closed terminal) must not stop the draining:
                    # a child blocked on a full pipe would hang.
                    with contextlib.suppress(Exception):
                        sink(name, line)

    thread = threading.Thread(target=copy, name=f"log-{name}", daemon=True)
    thread.start()
    return write_fd, thread


def compact(line: str) -> str:
    """A JSON log line as `level message [requestId]`, then its traceback; others unchanged."""
    entry: Any = None
    if line.startswith("{"):
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
    if not (isinstance(entry, dict) and "message" in entry):
        return line
    text = f"{entry.get('level', '')!s:<7} {entry['message']}"
    if entry.get("requestId"):
        text += f"  [{entry['requestId']}]"
    if entry.get("error"):
        text += "\n" + str(entry["error"]).rstrip()
    return text


def tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file, JSON lines made readable."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(compact(line) for line in text.splitlines()[-lines:])

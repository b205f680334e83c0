"""Child processes by pid and process group (/proc, signals), so a stack can stop what it runs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid`: a pid plus this names one process, even after reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def is_alive(pid: int, started: str | None = None) -> bool:
    """Whether `pid` runs (not a zombie), and is the process that had start time `started`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        if fields[0] == "Z":
            return False
    return started is None or process_start(pid) in (None, started)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def spawn(
    module: str, *, cwd: Path, env: Mapping[str, str], output: int
) -> subprocess.Popen[bytes]:
    """Run `python -m <module>` in its own session (Ctrl-C in the terminal reaches only the
    CLI, which stops the children in order), its output and errors to the file `output`."""
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_children(
    children: Sequence[subprocess.Popen[bytes]],
    timeout: float,
    on_kill: Callable[[subprocess.Popen[bytes]], None],
) -> None:
    """SIGTERM the process group of each running child and wait for them all; a child still
    running after `timeout` is reported to `on_kill`, then killed with its group."""
    for child in children:
        if child.poll() is None:
            signal_group(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            on_kill(child)
            signal_group(child.pid, signal.SIGKILL)
            child.wait()
        if group_alive(child.pid):  # a grandchild outlived its parent
            signal_group(child.pid, signal.SIGKILL)


def stop_groups(leaders: Sequence[tuple[int, str | None]], timeout: float) -> None:
    """Stop process groups another process started, each named by its leader's (pid, start
    time): SIGTERM each, then SIGKILL what is left after `timeout`."""
    batch = [(pid, started) for pid, started in leaders if is_alive(pid, started)]
    for pid, _ in batch:
        signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(is_alive(pid) for pid, _ in batch):
        time.sleep(0.05)
    for pid, _ in batch:
        if group_alive(pid):
            signal_group(pid, signal.SIGKILL)

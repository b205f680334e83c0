"""What outlives a run under `<root>/.data/`: run.json (for `status`, `down`) and dev secrets."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from devstack.processes import process_start


def data_dir(root: Path) -> Path:
    """Where a stack's data, logs, dev secrets and run.json live; kept across restarts."""
    return root / ".data"


def read_state(root: Path) -> dict[str, Any] | None:
    """What `run.json` says runs under `root`, or None."""
    try:
        state: dict[str, Any] = json.loads((data_dir(root) / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return state


def write_state(
    root: Path, url: str | None, parts: Sequence[Mapping[str, Any]], skipped: Sequence[str]
) -> None:
    """Say in `run.json`, in one atomic write, that this process runs `parts` from `root`."""
    state = {
        "pid": os.getpid(),
        "started": process_start(os.getpid()),
        "root": str(root),
        "url": url,
        "parts": list(parts),
        "skipped": list(skipped),
    }
    path = data_dir(root) / "run.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=2))
    temporary.replace(path)


def clear_state(root: Path) -> None:
    """Nothing runs under `root` any more."""
    (data_dir(root) / "run.json").unlink(missing_ok=True)


def dev_secret(root: Path, name: str, make: Callable[[], str]) -> str:
    """A random secret made once and kept in `.data/<name>`, so what it signs (sessions,
    webhooks) stays valid across restarts of the stack."""
    path = data_dir(root) / name
    if not path.exists() or not path.read_text().strip():
        path.touch(mode=0o600)
        path.write_text(make())
    return path.read_text().strip()

"""Moments as the APIs and events write them: ISO 8601 UTC with milliseconds and a `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch: a moment an index serves as a plain number everywhere."""
    return int(moment.timestamp() * 1000)


def now_ms() -> int:
    return epoch_ms(datetime.now(UTC))

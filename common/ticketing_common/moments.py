"""Moments as the APIs and events write them: ISO 8601 UTC with milliseconds and a `Z`."""

from __future__ import annotations

from datetime import datetime


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

"""Spans as JSON lines in a file: what the dev runner shows traces from, with no server to run."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

Span = dict[str, Any]


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def as_record(span: ReadableSpan) -> Span:
    """One span as a flat record, named as in OTLP JSON (ids in hex, times in epoch ns)."""
    context, parent = span.context, span.parent
    assert context is not None
    return {
        "traceId": _hex(context.trace_id, 32),
        "spanId": _hex(context.span_id, 16),
        "parentSpanId": _hex(parent.span_id, 16) if parent is not None else "",
        "name": span.name,
        "kind": span.kind.name,
        "service": span.resource.attributes.get("service.name", ""),
        "startTimeUnixNano": span.start_time,
        "endTimeUnixNano": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


class SpanFileExporter(SpanExporter):
    """Appends each finished span to `path` as one JSON line (batches come from a background
    thread; one write per batch, so lines of processes sharing the file do not interleave)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        text = "".join(json.dumps(as_record(s), default=str) + "\n" for s in spans)
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(text)
        return SpanExportResult.SUCCESS


def read_spans(folder: Path) -> list[Span]:
    """Every span written under `folder`; a line cut short by a writer still busy is skipped."""
    spans: list[Span] = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                spans.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return spans


def traces_about(spans: Iterable[Span], key: str) -> list[str]:
    """The ids of the traces that carried events about `key` (an order, a ticket), or of the
    trace `key` itself, oldest first."""
    first: dict[str, int] = {}
    for span in spans:
        if key in (span["traceId"], span["attributes"].get("ticketing.key")):
            start = span["startTimeUnixNano"]
            first[span["traceId"]] = min(first.get(span["traceId"], start), start)
    return sorted(first, key=first.__getitem__)

"""`ticketing trace`: the span trees of one order's (or ticket's) traces, read from the span files
the services write under `.data/traces/`, with each span's start and duration."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from ticketing_common.spanfile import Span

MS = 1_000_000  # nanoseconds


def _label(span: Span) -> str:
    """The span's name, with the URL an HTTP client called, failures and redeliveries."""
    attributes = span["attributes"]
    name = str(span["name"])
    url = attributes.get("url.full") or attributes.get("http.url")
    if url and span["kind"] == "CLIENT":
        name = f"{name} {url}"
    if span["status"] == "ERROR":
        name += "  [error]"
    deliveries = attributes.get("ticketing.deliveries", 1)
    if isinstance(deliveries, int) and deliveries > 1:
        name += f"  [delivery {deliveries}]"
    return name


def render(spans: Sequence[Span], trace_id: str) -> list[str]:
    """One trace as a tree: `+start ms  duration ms  service  name`, children under parents in
    the order they started; a span whose parent is not (yet) in the files is shown as a root."""
    mine = sorted((s for s in spans if s["traceId"] == trace_id), key=_start)
    if not mine:
        return [f"trace {trace_id}: no spans"]
    ids = {s["spanId"] for s in mine}
    children: dict[str, list[Span]] = {}
    roots: list[Span] = []
    for span in mine:
        parent = span["parentSpanId"]
        if parent and parent in ids:
            children.setdefault(parent, []).append(span)
        else:
            roots.append(span)
    origin = _start(mine[0])
    end = max(int(s["endTimeUnixNano"] or 0) for s in mine)
    services = sorted({str(s["service"]) for s in mine})
    began = datetime.fromtimestamp(origin / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    lines = [
        f"trace {trace_id}  {began} UTC  {(end - origin) / MS:.1f} ms  "
        f"{len(mine)} spans  ({', '.join(services)})"
    ]
    width = max(len(service) for service in services)

    def walk(span: Span, depth: int) -> None:
        start = (_start(span) - origin) / MS
        took = (int(span["endTimeUnixNano"] or 0) - _start(span)) / MS
        service = f"{span['service']:<{width}}"
        lines.append(f"{start:>+10.1f} ms {took:>9.1f} ms  {service}  {'  ' * depth}{_label(span)}")
        for child in children.get(span["spanId"], []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return lines


def _start(span: Span) -> int:
    return int(span["startTimeUnixNano"])

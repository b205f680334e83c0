"""Stripe's webhooks: Event objects, signed as Stripe signs them, posted after the API answer
and retried with back-off, a bounded number of times."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

Json = dict[str, Any]

log = logging.getLogger("fakestripe.webhooks")

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
MAX_RETRY_SECONDS = 60.0
KEPT_DELIVERIES = 1000  # the delivery log is for tests and a look by hand, not an archive


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header: `t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<payload>">`."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"


def new_secret() -> str:
    return f"whsec_{secrets.token_hex(24)}"


def encode(event: Json) -> str:
    """The raw body, pretty-printed as Stripe sends it: a receiver must verify the bytes it got,
    not JSON it re-serialised."""
    return json.dumps(event, indent=2)


@dataclass
class Config:
    """Where and how to deliver: `WEBHOOK_URL` (empty: no deliveries), `STRIPE_WEBHOOK_SECRET`,
    `WEBHOOK_MAX_ATTEMPTS` and `WEBHOOK_RETRY_SECONDS` (the first back-off, then doubled)."""

    url: str = ""
    secret: str = field(default_factory=new_secret)
    max_attempts: int = 5
    retry_seconds: float = 1.0
    timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Config:
        return cls(
            url=environ.get("WEBHOOK_URL", "").strip(),
            secret=environ.get("STRIPE_WEBHOOK_SECRET", "").strip() or new_secret(),
            max_attempts=max(1, int(environ.get("WEBHOOK_MAX_ATTEMPTS") or 5)),
            retry_seconds=max(0.0, float(environ.get("WEBHOOK_RETRY_SECONDS") or 1.0)),
        )


async def post(url: str, body: bytes, headers: Mapping[str, str]) -> int:
    """POST `body` on a fresh connection and return the answer's status. Standard library only:
    the image installs no HTTP client, and this one is cancelled cleanly at shutdown."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    reader, writer = await asyncio.open_connection(
        parts.hostname, parts.port or (443 if secure else 80), ssl=secure or None
    )
    try:
        writer.write("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        status_line = await reader.readline()
        while await reader.read(65536):  # let the receiver finish its answer
            pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    words = status_line.split()
    if len(words) < 2 or not words[1].isdigit():
        raise ConnectionError(f"not an HTTP answer: {status_line[:80]!r}")
    return int(words[1])


class Webhooks:
    """Posts events to the configured endpoint; keeps a log of every attempt for `/_test`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.deliveries: deque[Json] = deque(maxlen=KEPT_DELIVERIES)
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Events whose delivery (with its retries) has not ended yet."""
        return sum(not task.done() for task in self.tasks)

    async def send(self, events: Iterable[Json]) -> None:
        """Deliver each event in the background, retried on failure; nothing without a URL."""
        if not self.config.url:
            return
        for event in events:
            task = asyncio.get_running_loop().create_task(self._deliver(event))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _deliver(self, event: Json) -> None:
        config = self.config
        for attempt in range(1, config.max_attempts + 1):
            record = await self.attempt(event, attempt)
            if record["delivered"]:
                return
            if attempt < config.max_attempts:
                await asyncio.sleep(
                    min(config.retry_seconds * 2 ** (attempt - 1), MAX_RETRY_SECONDS)
                )
        # One line per event, however many attempts: a missing endpoint must not flood the log.
        log.warning(
            "webhook %s (%s) not delivered to %s after %d attempts; last: %s",
            event["id"],
            event["type"],
            config.url,
            config.max_attempts,
            record["error"] or record["status"],
        )

    async def attempt(self, event: Json, attempt: int = 1) -> Json:
        """Post `event` once, signed now; log and return the outcome."""
        url, payload = self.config.url, encode(event)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "Stripe-Signature": sign(payload, self.config.secret),
        }
        status: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self.config.timeout_seconds):
                status = await post(url, payload.encode(), headers)
        except (OSError, TimeoutError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        record = {
            "event": event["id"],
            "type": event["type"],
            "url": url,
            "attempt": attempt,
            "status": status,
            "error": error,
            "delivered": status is not None and 200 <= status < 300,
            "at": time.time(),
        }
        self.deliveries.append(record)
        if record["delivered"]:
            log.info("webhook %s (%s) delivered: %s", event["id"], event["type"], status)
        return record

    async def close(self) -> None:
        """Stop the deliveries still retrying (the process is going away)."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

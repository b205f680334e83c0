"""What the fakestripe tests share besides fixtures: the app served over real HTTP from a thread
(`serve`), a client of its test routes (`Server`), a webhook endpoint that records what reaches
it (`Receiver`), and polling until a condition holds (`until`)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

T = TypeVar("T")
SECRET = "whsec_test_secret_for_fakestripe_tests"


def until(check: Callable[[], T | None], within: float = 10.0) -> T:
    """Poll `check` until it returns something truthy (the server works asynchronously)."""
    deadline = time.monotonic() + within
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s; last value: {result!r}")
        time.sleep(0.01)
    return result


@contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Serve `app` over real HTTP from a background thread; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
    uv_server = uvicorn.Server(config)
    thread = threading.Thread(target=uv_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not uv_server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        uv_server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class Server:
    """Where the server listens, and its test-only listings, as service tests read them."""

    url: str

    def listing(self, name: str, **params: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = httpx.get(f"{self.url}/_test/{name}", params=params).json()[
            "data"
        ]
        return data

    def intents(self) -> list[dict[str, Any]]:
        return self.listing("payment_intents")

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return self.listing("events", **({"type": kind} if kind else {}))

    def control(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        """Call a `/_test` route; anything but a 200 fails the test."""
        response = httpx.request(method, f"{self.url}/_test/{path}", json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def webhooks(self) -> dict[str, Any]:
        return self.control("GET", "webhooks")

    def settled(self) -> dict[str, Any] | None:
        """The webhook view once no delivery is under way any more, else None."""
        view = self.webhooks()
        return view if view["pending"] == 0 else None


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook endpoint: records every request, answers the next status of `answers` (then
    200), and, while `gate` is clear, keeps its answer back."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.gate.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        with self.arrived:
            self.received.append(Received(scope["path"], headers, body))
            status = self.answers.pop(0) if self.answers else 200
            self.arrived.notify_all()
        await asyncio.to_thread(self.gate.wait, 30)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def wait_for(self, count: int, within: float = 10.0) -> list[Received]:
        """Block until `count` requests have arrived; returns them all."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.received) >= count, within):
                raise AssertionError(f"{len(self.received)} of {count} deliveries arrived")
            return list(self.received)

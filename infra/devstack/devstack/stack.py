"""The whole system on one machine as one object: start each part, wait until it answers, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from devstack import logs, topology
from devstack.processes import (
    group_alive,
    is_alive,
    process_start,
    signal_group,
    spawn,
    stop_children,
    stop_groups,
)
from devstack.state import clear_state, data_dir, dev_secret, read_state, write_state
from devstack.topology import DEV_STRIPE_KEY, PREFERRED_PORTS, STOP_ORDER, Ports
from ticketing_common.embedded import Server, port_is_free, start_mongo, start_nats, start_redis


class StackError(RuntimeError):
    """The stack could not start; the message says which part and why."""


# A part that exits on its own is started again after a pause that doubles from FIRST_BACKOFF
# up to MAX_BACKOFF, back to FIRST_BACKOFF once a run of it lasted STABLE_AFTER seconds.
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 10.0
STABLE_AFTER = 30.0

Launch = Callable[[bool], tuple[subprocess.Popen[bytes], threading.Thread]]
"""Starts a part's process (its log appended to, with True) and its log pump."""


def exit_reason(code: int) -> str:
    """`exited 1`, `exited -9 (SIGKILL)`: how a part's process ended."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"exited {code} ({signal.Signals(-code).name})"
    return f"exited {code}"


@dataclass
class Part:
    """One child process of the stack."""

    name: str
    kind: str  # server, stripe, service or ingress
    process: subprocess.Popen[bytes]
    port: int
    url: str
    log_path: Path
    pump: threading.Thread
    started: str | None = field(default=None)
    launch: Launch | None = field(default=None, repr=False)
    restarts: int = 0
    last_exit: str | None = None
    since: float = field(default_factory=time.monotonic)  # when its process started
    backoff: float = FIRST_BACKOFF  # the pause before its next restart
    due: float | None = None  # when it is started again, while it is down

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "pid": self.process.pid,
            "started": self.started,
            "port": self.port,
            "url": self.url,
            "log": str(self.log_path),
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }

    def log_tail(self, lines: int = 20) -> str:
        self.pump.join(2)  # let the last lines reach the file
        return logs.tail(self.log_path, lines)


def answers(port: int, path: str | None) -> bool:
    """Whether 127.0.0.1:`port` answers `GET path` with 200 (any connection, for None)."""
    if path is None:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
        except OSError:
            return False
        return True
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no $http_proxy
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):  # 503 too: not ready yet
        return False


def terminate_records(records: Sequence[Mapping[str, Any]], timeout: float = 10.0) -> None:
    """Stop processes named by `run.json` records that another process started: SIGTERM each
    process group (kind by kind, in stop order), then SIGKILL what is left after `timeout`."""
    for kind in STOP_ORDER:
        stop_groups([(r["pid"], r.get("started")) for r in records if r["kind"] == kind], timeout)


class Stack:
    """Everything `make run` starts, as one object: `with Stack(root) as stack: ...`.

    Once started (with `supervise`, the default) a part that exits on its own is started again,
    with back-off, on its port with its environment and data; run.json gets its new pid, its
    restart count and how its last process ended. Stopping the stack restarts nothing."""

    def __init__(
        self,
        root: Path,
        *,
        ingress_port: int | None = None,
        env: Mapping[str, str] | None = None,
        log: logs.LogSink | None = None,
        services: Iterable[str] | None = None,
        start_timeout: float = 90.0,
        stop_timeout: float = 15.0,
        supervise: bool = True,
    ) -> None:
        self.root = Path(root).resolve()
        self.data = data_dir(self.root)
        self.overrides = dict(env or {})
        self.environ = {**os.environ, **self.overrides}
        self.requested_ingress_port = topology.ingress_port(self.environ, ingress_port)
        self.sink = log
        self.wanted = topology.wanted(services)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.parts: list[Part] = []
        self.skipped: list[str] = []
        self._ports = Ports()
        self.supervise = supervise
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    # -- what runs where ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The ingress: the one address users and end-to-end tests talk to."""
        return self._part("ingress").url

    @property
    def service_urls(self) -> dict[str, str]:
        return {p.name: p.url for p in self.parts if p.kind == "service"}

    @property
    def urls(self) -> dict[str, str]:
        """The servers the services use: nats, redis, mongo and, when faked, stripe."""
        return {p.name: p.url for p in self.parts if p.kind in ("server", "stripe")}

    def _part(self, name: str) -> Part:
        for part in self.parts:
            if part.name == name:
                return part
        raise KeyError(f"{name} is not running")

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- start ----------------------------------------------------------------------------------

    def start(self) -> Stack:
        """Start every part and wait until each answers; on any failure stop what started."""
        if self.parts:
            raise StackError("this stack is already started")
        self._stopping.clear()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        if self.supervise:
            self._supervisor = threading.Thread(
                target=self._supervise, name="devstack-supervisor", daemon=True
            )
            self._supervisor.start()
        return self

    def _start(self) -> None:
        self.skipped = []
        for sub in ("nats", "redis", "mongo", "logs"):
            (self.data / sub).mkdir(parents=True, exist_ok=True)
        self._clear_leftovers()
        ingress_port = self.requested_ingress_port or self._ports.take()
        if not port_is_free(ingress_port):
            raise StackError(
                f"port {ingress_port} is already in use; stop what uses it or set INGRESS_PORT"
            )
        self._ports.claim(ingress_port)

        nats = self._server("nats", start_nats)
        redis = self._server("redis", start_redis)
        mongo = self._server("mongo", start_mongo)

        stripe_key = self.environ.get("STRIPE_KEY") or DEV_STRIPE_KEY
        jwt_key = self.environ.get("JWT_KEY") or dev_secret(
            self.root, "jwt_key", topology.new_jwt_key
        )
        common = topology.services_env(
            self.environ, nats=nats.url, redis=redis.url, jwt_key=jwt_key, stripe_key=stripe_key
        )
        common.update(topology.tracing_env(self.environ, str(self.data / "traces")))
        # Payments checks Stripe's webhook signatures with it; a real key needs the real secret.
        webhook_secret = self.environ.get("STRIPE_WEBHOOK_SECRET", "")
        waiting: list[tuple[Part, str | None]] = []
        if topology.fakes_stripe(stripe_key):
            webhook_secret = webhook_secret or dev_secret(
                self.root, "stripe_webhook_secret", topology.new_webhook_secret
            )
            stripe_env = topology.stripe_env(ingress_port, webhook_secret)
            stripe = self._spawn("stripe", "stripe", "fakestripe", stripe_env)
            common["STRIPE_API_BASE"] = stripe.url
            waiting.append((stripe, "/healthz"))
        else:
            self.say("a real STRIPE_KEY is set: payments use the Stripe API")

        ports: dict[str, int] = {}
        for service in self.wanted:
            if topology.runnable(service.module):
                ports[service.name] = self._ports.take()
            else:
                self.skipped.append(service.name)
        if self.skipped:
            self.say(f"not runnable yet, skipped: {', '.join(self.skipped)}")
        common.update(topology.api_urls(self.wanted, ports, ingress_port))
        for service in self.wanted:
            if service.name not in ports:
                continue
            env = topology.service_env(
                service, common, mongo=mongo.url, webhook_secret=webhook_secret
            )
            part = self._spawn(service.name, "service", service.module, env, ports[service.name])
            waiting.append((part, "/readyz"))
        # The ingress needs nothing running to start (its routes answer 503 until their service
        # does), so it starts alongside the services.
        ingress_env = topology.ingress_env(topology.routes(self.wanted, self.service_urls))
        ingress = self._spawn("ingress", "ingress", "devstack.ingress", ingress_env, ingress_port)
        waiting.append((ingress, None))
        self._await_ready(waiting)
        self.say(f"running at {self.url}")

    def _clear_leftovers(self) -> None:
        """Refuse a second stack on the same data; stop what a stack that died left behind."""
        state = read_state(self.root)
        if state is None:
            return
        owner = state.get("pid")
        if isinstance(owner, int) and is_alive(owner, state.get("started")):
            raise StackError(
                f"Ticketing already runs from {self.root} (pid {owner}); `ticketing down` stops it"
            )
        leftovers = [r for r in state.get("parts", []) if is_alive(r["pid"], r.get("started"))]
        if leftovers:
            self.say(f"stopping leftovers of an earlier run: {[r['name'] for r in leftovers]}")
            terminate_records(leftovers, self.stop_timeout)
        clear_state(self.root)
        # nx-27017 refuses to start while its pid file names a live process (pids get reused).
        (self.data / "mongo" / "nx-27017.pid").unlink(missing_ok=True)

    def _log_path(self, name: str) -> Path:
        return self.data / "logs" / f"{name}.log"

    def _pump(self, name: str, append: bool = False) -> tuple[int, threading.Thread]:
        """A pipe whose lines go to `.data/logs/<name>.log` and to the sink."""
        return logs.pump(name, self._log_path(name), self.sink, append=append)

    def _server(self, name: str, start: Callable[..., Server]) -> Part:
        port = self._ports.take(PREFERRED_PORTS[name])
        path = self._log_path(name)
        url = ""

        def launch(append: bool) -> tuple[subprocess.Popen[bytes], threading.Thread]:
            nonlocal url
            if name == "mongo":  # it refuses to start while its pid file names a live process
                (self.data / "mongo" / "nx-27017.pid").unlink(missing_ok=True)
            write_fd, pump = self._pump(name, append)
            try:
                server = start(self.data / name, port, write_fd)
            except (RuntimeError, TimeoutError):
                pump.join(2)
                raise
            finally:
                os.close(write_fd)
            url = server.url
            return server.process, pump

        try:
            try:
                process, pump = launch(False)
            except RuntimeError:
                if port_is_free(port):
                    raise
                # Another stack's server took the port between the probe and the bind.
                port = self._ports.take()
                process, pump = launch(True)
        except (RuntimeError, TimeoutError) as exc:
            raise StackError(f"{name}: {exc}; its log ends with:\n{logs.tail(path)}") from None
        return self._add(Part(name, "server", process, port, url, path, pump, launch=launch))

    def _spawn(
        self, name: str, kind: str, module: str, env: Mapping[str, str], port: int | None = None
    ) -> Part:
        """Run `python -m <module>` as the part `name`, on `port` or a free one, with `env` on
        top of the caller's environment (the stack's `env=` overrides still win)."""
        port = port or self._ports.take()
        environ = topology.child_env(
            self.environ, env, self.overrides, port, ingress=kind == "ingress"
        )

        def launch(append: bool) -> tuple[subprocess.Popen[bytes], threading.Thread]:
            write_fd, pump = self._pump(name, append)
            try:
                process = spawn(module, cwd=self.root, env=environ, output=write_fd)
            except OSError:
                pump.join(2)
                raise
            finally:
                os.close(write_fd)
            return process, pump

        process, pump = launch(False)
        url = f"http://127.0.0.1:{port}"
        path = self._log_path(name)
        return self._add(Part(name, kind, process, port, url, path, pump, launch=launch))

    def _add(self, part: Part) -> Part:
        part.started = process_start(part.process.pid)
        self.parts.append(part)
        self._write_state()
        return part

    def _await_ready(self, waiting: list[tuple[Part, str | None]]) -> None:
        """Poll every part until each answers (its health path with 200, or, for None, its port
        with a connection), one exits, or time runs out."""
        deadline = time.monotonic() + self.start_timeout
        pending = list(waiting)
        while pending:
            for part, path in list(pending):
                code = part.process.poll()
                if code is not None:
                    raise StackError(
                        f"{part.name} exited with code {code} while starting; "
                        f"its log ({part.log_path}) ends with:\n{part.log_tail()}"
                    )
                if answers(part.port, path):
                    pending.remove((part, path))
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(p.name for p, _ in pending)
                tails = "\n".join(f"--- {p.name}:\n{p.log_tail()}" for p, _ in pending)
                raise StackError(
                    f"not ready within {self.start_timeout:.0f}s: {names}; their logs end with:\n"
                    f"{tails}"
                )
            time.sleep(0.1)

    # -- supervise ------------------------------------------------------------------------------

    def _supervise(self) -> None:
        """Until the stack stops: start again, with back-off, each part that exits."""
        while not self._stopping.wait(0.2):
            with self._lock:
                if self._stopping.is_set():
                    return
                self.check_parts()

    def check_parts(self) -> None:
        """Note each part that exited since the last look, and start again those whose pause
        is over, on the same port with the same environment and data; run.json follows."""
        changed = False
        for part in self.parts:
            if self._stopping.is_set():
                break
            now = time.monotonic()
            if part.due is None:
                code = part.process.poll()
                if code is None:
                    continue
                part.pump.join(1)  # its last lines first
                self._down(part, exit_reason(code), now)
                changed = True
            elif now >= part.due:
                self._restart(part)
                changed = True
        if changed:
            self._write_state()

    def _down(self, part: Part, reason: str, now: float) -> None:
        if group_alive(part.process.pid):  # what it started must not keep its port
            signal_group(part.process.pid, signal.SIGKILL)
        part.last_exit = reason
        if now - part.since >= STABLE_AFTER:
            part.backoff = FIRST_BACKOFF
        part.due = now + part.backoff
        self.say(f"{part.name} {reason}; restarting in {part.backoff:g}s (log: {part.log_path})")
        part.backoff = min(part.backoff * 2, MAX_BACKOFF)

    def _restart(self, part: Part) -> None:
        assert part.launch is not None
        try:
            process, pump = part.launch(True)
        except (OSError, RuntimeError, TimeoutError) as exc:
            self._down(part, f"failed to restart: {exc}", time.monotonic())
            return
        part.process, part.pump = process, pump
        part.started = process_start(process.pid)
        part.since = time.monotonic()
        part.due = None
        part.restarts += 1
        self.say(f"{part.name} restarted (pid {process.pid}, restart {part.restarts})")

    def _write_state(self) -> None:
        url = next((p.url for p in self.parts if p.kind == "ingress"), None)
        write_state(self.root, url, [p.record() for p in self.parts], self.skipped)

    def say(self, message: str) -> None:
        if self.sink is not None:
            self.sink("devstack", message)

    # -- stop -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM each kind of part in turn (ingress, services, stripe, servers) and wait; what
        does not exit in time is killed, with its whole process group. Safe to call twice."""
        self._stopping.set()  # no restarts from here on
        with self._lock:
            for kind in STOP_ORDER:
                self._stop_batch([p for p in self.parts if p.kind == kind])
            for part in self.parts:
                part.pump.join(2)
            if self.parts:
                clear_state(self.root)
            self.parts.clear()
            self._ports.clear()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(5)
            self._supervisor = None

    def _stop_batch(self, batch: list[Part]) -> None:
        names = {part.process.pid: part.name for part in batch}

        def killed(process: subprocess.Popen[bytes]) -> None:
            self.say(f"{names[process.pid]} did not stop within {self.stop_timeout:.0f}s: killed")

        stop_children([part.process for part in batch], self.stop_timeout, killed)

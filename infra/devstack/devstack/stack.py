"""The whole system on one machine: embedded servers, the Stripe test server, every service and
the ingress, each a child process whose output is captured line by line.

Used by the CLI (`ticketing up`) and by tests (`devstack.testing`). Data lives under
`<root>/.data/` and survives restarts; `<root>/.data/run.json` names what runs, for `ticketing
status` and `ticketing down`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ticketing_common.embedded import (
    Server,
    free_port,
    pick_port,
    port_is_free,
    start_mongo,
    start_nats,
    start_redis,
)
from ticketing_common.registry import installed_services

LogSink = Callable[[str, str], None]
"""Receives (part name, one line of its output)."""

DEV_STRIPE_KEY = "sk_test_dev"
WEBHOOK_PATH = "/api/payments/webhook"
DEFAULT_INGRESS_PORT = 8080
# Not the standard ports, so servers already running on this machine keep theirs.
PREFERRED_PORTS = {"nats": 14222, "redis": 16379, "mongo": 27117}
STOP_ORDER = ("ingress", "service", "stripe", "server")
# nx-27017 logs every command at INFO, and has no option to say less; the file keeps them.
CHATTY = re.compile(r" - (INFO|DEBUG) - ")


class StackError(RuntimeError):
    """The stack could not start; the message says which part and why."""


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


def runnable(module: str) -> bool:
    """A service is started only once its package can run (`python -m <module>`)."""
    try:
        return importlib.util.find_spec(f"{module}.__main__") is not None
    except ImportError:
        return False


def read_state(root: Path) -> dict[str, Any] | None:
    """What `run.json` says runs under `root`, or None."""
    try:
        state: dict[str, Any] = json.loads((root / ".data" / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return state


def terminate_records(records: Sequence[Mapping[str, Any]], timeout: float = 10.0) -> None:
    """Stop processes named by `run.json` records that another process started: SIGTERM each
    process group (kind by kind, in stop order), then SIGKILL what is left after `timeout`."""
    for kind in STOP_ORDER:
        batch = [r for r in records if r["kind"] == kind and is_alive(r["pid"], r.get("started"))]
        for record in batch:
            signal_group(record["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(is_alive(r["pid"]) for r in batch):
            time.sleep(0.05)
        for record in batch:
            if group_alive(record["pid"]):
                signal_group(record["pid"], signal.SIGKILL)


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

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "pid": self.process.pid,
            "started": self.started,
            "port": self.port,
            "url": self.url,
            "log": str(self.log_path),
        }

    def log_tail(self, lines: int = 20) -> str:
        self.pump.join(2)  # let the last lines reach the file
        return tail(self.log_path, lines)


class Stack:
    """Everything `make run` starts, as one object: `with Stack(root) as stack: ...`."""

    def __init__(
        self,
        root: Path,
        *,
        ingress_port: int | None = None,
        env: Mapping[str, str] | None = None,
        log: LogSink | None = None,
        services: Iterable[str] | None = None,
        start_timeout: float = 90.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.root = Path(root).resolve()
        self.data = self.root / ".data"
        self.overrides = dict(env or {})
        self.environ = {**os.environ, **self.overrides}
        if ingress_port is None:
            ingress_port = int(self.environ.get("INGRESS_PORT") or DEFAULT_INGRESS_PORT)
        self.requested_ingress_port = ingress_port
        self.sink = log
        # Every installed service (each declares itself), or only those named.
        known = {s.name: s for s in installed_services()}
        self.wanted = (
            tuple(known[n] for n in services) if services is not None else tuple(known.values())
        )
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.parts: list[Part] = []
        self.skipped: list[str] = []
        self._ports: set[int] = set()
        self._lock = threading.Lock()

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
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.skipped = []
        for sub in ("nats", "redis", "mongo", "logs"):
            (self.data / sub).mkdir(parents=True, exist_ok=True)
        self._clear_leftovers()
        ingress_port = self.requested_ingress_port or self._free_port()
        if not port_is_free(ingress_port):
            raise StackError(
                f"port {ingress_port} is already in use; stop what uses it or set INGRESS_PORT"
            )
        self._ports.add(ingress_port)

        nats = self._server("nats", start_nats)
        redis = self._server("redis", start_redis)
        mongo = self._server("mongo", start_mongo)

        stripe_key = self.environ.get("STRIPE_KEY") or DEV_STRIPE_KEY
        jwt_key = self.environ.get("JWT_KEY") or self._dev_secret(
            "jwt_key", lambda: secrets.token_urlsafe(48)
        )
        common = {
            "PYTHONUNBUFFERED": "1",
            "HOST": "127.0.0.1",
            "NATS_URL": nats.url,
            "REDIS_URL": redis.url,
            "JWT_KEY": jwt_key,
            "COOKIE_SECURE": "false",
            "STRIPE_KEY": stripe_key,
            "NO_PROXY": ",".join(
                filter(None, [self.environ.get("NO_PROXY", ""), "127.0.0.1,localhost"])
            ),
        }
        # Payments checks Stripe's webhook signatures with it; a real key needs the real secret.
        webhook_secret = self.environ.get("STRIPE_WEBHOOK_SECRET", "")
        waiting: list[tuple[Part, str | None]] = []
        if stripe_key.startswith(DEV_STRIPE_KEY):
            webhook_secret = webhook_secret or self._dev_secret(
                "stripe_webhook_secret", lambda: f"whsec_{secrets.token_hex(24)}"
            )
            stripe_env = {
                "HOST": "127.0.0.1",
                # Through the ingress, as Stripe reaches the payments service.
                "WEBHOOK_URL": f"http://127.0.0.1:{ingress_port}{WEBHOOK_PATH}",
                "STRIPE_WEBHOOK_SECRET": webhook_secret,
            }
            stripe = self._spawn("stripe", "stripe", "fakestripe", stripe_env)
            common["STRIPE_API_BASE"] = stripe.url
            waiting.append((stripe, "/healthz"))
        else:
            self.say("a real STRIPE_KEY is set: payments use the Stripe API")

        ports: dict[str, int] = {}
        for service in self.wanted:
            if runnable(service.module):
                ports[service.name] = self._free_port()
            else:
                self.skipped.append(service.name)
        if self.skipped:
            self.say(f"not runnable yet, skipped: {', '.join(self.skipped)}")
        apis = [s for s in self.wanted if s.route and s.route != "/"]
        for service in apis:
            # A skipped service's URL is the ingress, which answers its routes with the SPEC 503.
            port = ports.get(service.name, ingress_port)
            common[f"{service.name.upper()}_URL"] = f"http://127.0.0.1:{port}"
        for service in self.wanted:
            if service.name not in ports:
                continue
            own = {"MONGO_URI": f"{mongo.url}/{service.name}"} if service.uses_mongo else {}
            if service.name == "payments" and webhook_secret:
                own["STRIPE_WEBHOOK_SECRET"] = webhook_secret
            env = {**common, **own}
            part = self._spawn(service.name, "service", service.module, env, ports[service.name])
            waiting.append((part, "/readyz"))
        # The ingress needs nothing running to start (its routes answer 503 until their service
        # does), so it starts alongside the services.
        routes = {
            s.route: p.url for s in self.wanted for p in self.parts if p.name == s.name and s.route
        }
        ingress_env = {"INGRESS_HOST": "127.0.0.1", "ROUTES": json.dumps(routes)}
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
        (self.data / "run.json").unlink(missing_ok=True)
        # nx-27017 refuses to start while its pid file names a live process (pids get reused).
        (self.data / "mongo" / "nx-27017.pid").unlink(missing_ok=True)

    def _free_port(self, preferred: int | None = None) -> int:
        port = pick_port(preferred) if preferred else free_port()
        while port in self._ports:
            port = free_port()
        self._ports.add(port)
        return port

    def _dev_secret(self, name: str, make: Callable[[], str]) -> str:
        """A random secret made once and kept in `.data/<name>`, so what it signs (sessions,
        webhooks) stays valid across restarts of the stack."""
        path = self.data / name
        if not path.exists() or not path.read_text().strip():
            path.touch(mode=0o600)
            path.write_text(make())
        return path.read_text().strip()

    def _pump(self, name: str) -> tuple[int, Path, threading.Thread]:
        """A pipe whose lines go to `.data/logs/<name>.log` and to the sink; give the child
        the write end (and close it here once the child has it)."""
        path = self.data / "logs" / f"{name}.log"
        read_fd, write_fd = os.pipe()
        out = path.open("wb")

        def copy() -> None:
            with os.fdopen(read_fd, "rb") as pipe, out:
                for raw in pipe:
                    out.write(raw)
                    out.flush()
                    line = raw.decode(errors="replace").rstrip("\r\n")
                    if self.sink is not None and not (name == "mongo" and CHATTY.search(line)):
                        # A sink that fails (a closed terminal) must not stop the draining:
                        # a child blocked on a full pipe would hang.
                        with contextlib.suppress(Exception):
                            self.sink(name, line)

        thread = threading.Thread(target=copy, name=f"log-{name}", daemon=True)
        thread.start()
        return write_fd, path, thread

    def _server(self, name: str, start: Callable[..., Server]) -> Part:
        port = self._free_port(PREFERRED_PORTS[name])
        write_fd, path, pump = self._pump(name)
        try:
            server = start(self.data / name, port, write_fd)
        except (RuntimeError, TimeoutError) as exc:
            pump.join(2)
            raise StackError(f"{name}: {exc}; its log ends with:\n{tail(path)}") from None
        finally:
            os.close(write_fd)
        return self._add(Part(name, "server", server.process, port, server.url, path, pump))

    def _spawn(
        self, name: str, kind: str, module: str, env: Mapping[str, str], port: int | None = None
    ) -> Part:
        """Run `python -m <module>` in its own session (Ctrl-C in the terminal reaches only the
        CLI, which stops the children in order). Its environment: the caller's, then `env`, then
        the stack's `env=` overrides, then its own port."""
        port = port or self._free_port()
        write_fd, path, pump = self._pump(name)
        environ = {**self.environ, **env, **self.overrides, "PORT": str(port)}
        if kind == "ingress":
            environ["INGRESS_PORT"] = str(port)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=self.root,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
        return self._add(Part(name, kind, process, port, f"http://127.0.0.1:{port}", path, pump))

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

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "started": process_start(os.getpid()),
            "root": str(self.root),
            "url": next((p.url for p in self.parts if p.kind == "ingress"), None),
            "parts": [p.record() for p in self.parts],
            "skipped": self.skipped,
        }
        path = self.data / "run.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2))
        temporary.replace(path)

    def say(self, message: str) -> None:
        if self.sink is not None:
            self.sink("devstack", message)

    # -- stop -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM each kind of part in turn (ingress, services, stripe, servers) and wait; what
        does not exit in time is killed, with its whole process group. Safe to call twice."""
        with self._lock:
            for kind in STOP_ORDER:
                self._stop_batch([p for p in self.parts if p.kind == kind])
            for part in self.parts:
                part.pump.join(2)
            if self.parts:
                (self.data / "run.json").unlink(missing_ok=True)
            self.parts.clear()
            self._ports.clear()

    def _stop_batch(self, batch: list[Part]) -> None:
        for part in batch:
            if part.process.poll() is None:
                signal_group(part.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for part in batch:
            try:
                part.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{part.name} did not stop within {self.stop_timeout:.0f}s: killed")
                signal_group(part.process.pid, signal.SIGKILL)
                part.process.wait()
            if group_alive(part.process.pid):  # a grandchild outlived its parent
                signal_group(part.process.pid, signal.SIGKILL)


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

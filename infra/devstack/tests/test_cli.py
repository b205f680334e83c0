"""`ticketing up | status | down` as real processes, in a temporary working directory."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.cli import render
from devstack.stack import is_alive, process_start
from ticketing_common.embedded import free_port, port_is_free

TICKETING = [str(Path(sys.executable).with_name("ticketing"))]


@pytest.fixture
def nats_port_taken() -> Iterator[None]:
    """Something already listens on the dev runner's preferred NATS port."""
    if not port_is_free(14222):
        yield  # taken already, by someone else
        return
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 14222))
        blocker.listen()
        yield


class Up:
    """A running `ticketing up`, its output collected line by line."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.running = threading.Event()
        self.process = subprocess.Popen(
            [*TICKETING, "up"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if "Ticketing is running at" in line:
                self.running.set()
        self.running.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def test_up_serves_everything_through_the_ingress_and_stops_clean(
    tmp_path: Path, nats_port_taken: None
) -> None:
    port = free_port()
    env = {**os.environ, "INGRESS_PORT": str(port)}
    up = Up(tmp_path, env)
    try:
        assert up.running.wait(180), up.output
        assert up.process.poll() is None, up.output
        assert f"Ticketing is running at http://localhost:{port}" in up.output

        state = json.loads((tmp_path / ".data" / "run.json").read_text())
        parts = {part["name"]: part for part in state["parts"]}
        assert state["pid"] == up.process.pid
        assert {"nats", "redis", "mongo", "stripe", "auth", "ingress"} <= parts.keys()
        assert parts["nats"]["port"] != 14222  # taken: another port instead
        assert parts["ingress"]["port"] == port

        with httpx.Client(base_url=f"http://localhost:{port}", trust_env=False) as http:
            assert http.get("/api/users/currentuser").json() == {"currentUser": None}
            email = f"{uuid.uuid4().hex[:10]}@test.dev"
            answer = http.post("/api/users/signup", json={"email": email, "password": "secret12"})
            assert answer.status_code == 201, answer.text
            assert "session" in answer.cookies
            me = http.get("/api/users/currentuser").json()["currentUser"]
            assert me["email"] == email

        status = subprocess.run(
            [*TICKETING, "status"], cwd=tmp_path, capture_output=True, text=True, timeout=30
        )
        assert status.returncode == 0, status.stdout + status.stderr
        for name, part in parts.items():
            assert any(
                line.split()[:3] == [name, str(part["pid"]), "alive"]
                for line in status.stdout.splitlines()
            ), status.stdout
        assert "gone" not in status.stdout

        up.process.send_signal(signal.SIGINT)
        assert up.process.wait(60) == 0, up.output
        up.reader.join(10)
        assert up.lines[-1] == "stopped"
        for part in state["parts"]:
            assert not is_alive(part["pid"]), part
            with pytest.raises(ProcessLookupError):
                os.killpg(part["pid"], 0)  # nothing of its process group either
        assert not (tmp_path / ".data" / "run.json").exists()
        assert (tmp_path / ".data" / "jwt_key").exists()
        assert (tmp_path / ".data" / "logs" / "auth.log").read_text()
    finally:
        if up.process.poll() is None:
            up.process.send_signal(signal.SIGINT)
            try:
                up.process.wait(60)
            except subprocess.TimeoutExpired:
                subprocess.run([*TICKETING, "down"], cwd=tmp_path, timeout=60)


def test_down_stops_what_a_dead_up_left_behind(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan = subprocess.Popen(["sleep", "300"], start_new_session=True)
    (tmp_path / ".data").mkdir()
    state = {
        "pid": gone.pid,
        "started": "0",
        "parts": [
            {
                "name": "auth",
                "kind": "service",
                "pid": orphan.pid,
                "started": process_start(orphan.pid),
                "port": 1,
                "url": "http://127.0.0.1:1",
            }
        ],
    }
    (tmp_path / ".data" / "run.json").write_text(json.dumps(state))
    try:
        status = subprocess.run(
            [*TICKETING, "status"], cwd=tmp_path, capture_output=True, text=True
        )
        assert status.returncode == 1  # its `up` is gone
        down = subprocess.run([*TICKETING, "down"], cwd=tmp_path, capture_output=True, text=True)
        assert down.returncode == 0, down.stderr
        assert down.stdout.splitlines()[-1] == "stopped"
        assert orphan.wait(10) == -signal.SIGTERM
        assert not (tmp_path / ".data" / "run.json").exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            orphan.kill()
        orphan.wait()


def test_status_and_down_when_nothing_runs(tmp_path: Path) -> None:
    status = subprocess.run([*TICKETING, "status"], cwd=tmp_path, capture_output=True, text=True)
    assert status.returncode == 1
    assert "not running" in status.stdout
    down = subprocess.run([*TICKETING, "down"], cwd=tmp_path, capture_output=True, text=True)
    assert down.returncode == 0


def test_log_lines_render_compactly() -> None:
    line = json.dumps(
        {
            "time": "2026-11-28T10:00:00.000Z",
            "level": "info",
            "service": "auth",
            "logger": "ticketing.http",
            "message": "GET /api/users/currentuser 200 1.2ms",
            "requestId": "abc123",
        }
    )
    assert render("auth", line) == (
        "auth       | info    GET /api/users/currentuser 200 1.2ms  [abc123]"
    )
    failed = json.dumps({"level": "error", "message": "boom", "error": "Traceback\n  line"})
    assert render("orders", failed).splitlines() == [
        "orders     | error   boom",
        "orders     | Traceback",
        "orders     |   line",
    ]
    assert render("nats", "[1] plain text") == "nats       | [1] plain text"

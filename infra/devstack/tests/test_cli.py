"""`ticketing up | status | down` as real processes, in a temporary working directory."""

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.js.api import ConsumerConfig

from devstack.cli import duration, render, size
from devstack.processes import is_alive, process_start
from ticketing_common.bus import EventBus
from ticketing_common.embedded import free_port, port_is_free
from ticketing_testing import eventually

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


def write_state(root: Path, nats_url: str) -> None:
    """A run.json as `ticketing up` writes it, with this process standing in for `up` and NATS."""
    me = {"pid": os.getpid(), "started": process_start(os.getpid())}
    nats = {"name": "nats", "kind": "server", **me, "port": 0, "url": nats_url}
    (root / ".data").mkdir()
    state = {**me, "root": str(root), "url": None, "parts": [nats], "skipped": []}
    (root / ".data" / "run.json").write_text(json.dumps(state))


def run_status(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TICKETING, "status"], cwd=root, capture_output=True, text=True, timeout=60
    )


def row(output: str, first: str) -> list[str]:
    """The words of the line of `output` that starts with `first`."""
    return next(line.split() for line in output.splitlines() if line.startswith(first))


async def test_status_shows_the_stream_its_consumers_and_dead_letters(
    tmp_path: Path, nats_url: str, bus: EventBus
) -> None:
    for n in range(5):
        await bus.publish("ticket.created", b"{}", f"status-{n}")
    await bus.publish("deadletter.orders", b"{}", "status-dead")
    idle = ConsumerConfig(durable_name="tickets-idle", filter_subject="ticket.*")
    await bus.js.add_consumer(bus.stream, idle)
    # One unacked message at a time, so what comes after a nak is that message again.
    one = ConsumerConfig(max_ack_pending=1)
    busy = await bus.js.pull_subscribe(
        "ticket.created", durable="orders-busy", stream=bus.stream, config=one
    )
    [first] = await busy.fetch(1, timeout=5)
    await first.ack()
    [second] = await busy.fetch(1, timeout=5)
    await second.nak()
    [again] = await busy.fetch(1, timeout=5)  # left unacked
    assert (again.metadata.sequence.stream, again.metadata.num_delivered) == (2, 2)

    async def settled() -> bool:
        info = await bus.js.consumer_info(bus.stream, "orders-busy")
        return (info.num_pending, info.num_ack_pending, info.num_redelivered) == (3, 1, 1)

    await eventually(settled)
    write_state(tmp_path, nats_url)
    status = await asyncio.to_thread(run_status, tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    out = status.stdout
    summary = re.search(r"^NATS stream TICKETING: 5 messages \(.+\); limits: (.+)$", out, re.M)
    assert summary, out
    assert re.fullmatch(r"max_age \S+, max_bytes .+, duplicate window \S+", summary[1])
    assert row(out, "consumer") == ["consumer", "pending", "ack", "pending", "redelivered"]
    assert row(out, "orders-busy") == ["orders-busy", "3", "1", "1"]
    assert row(out, "tickets-idle") == ["tickets-idle", "5", "0", "0"]
    assert "dead letters (DEADLETTERS): 1" in out.splitlines()
    assert status.stderr == ""


async def test_status_before_any_service_made_the_streams(tmp_path: Path, nats_url: str) -> None:
    write_state(tmp_path, nats_url)
    status = await asyncio.to_thread(run_status, tmp_path)
    assert status.returncode == 0, status.stderr
    assert "NATS stream TICKETING: not created yet (no service has connected)" in status.stdout
    assert "dead letters (DEADLETTERS): 0" in status.stdout


def test_status_says_in_one_line_when_nats_does_not_answer(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    write_state(tmp_path, url)
    status = run_status(tmp_path)
    assert status.returncode == 0, status.stderr  # its `up` (this process) is alive
    [line] = [line for line in status.stdout.splitlines() if "NATS" in line]
    assert line.startswith(f"NATS at {url} is not reachable: ")
    assert status.stderr == ""


def test_limits_read_as_nats_means_them() -> None:
    assert [duration(s) for s in (0, None, 7 * 86400, 3600, 120, 90, 2.5)] == [
        "unlimited",
        "unlimited",
        "7d",
        "1h",
        "2m",
        "90s",
        "2.5s",
    ]
    assert [size(n) for n in (-1, None, 0, 512, 3482, 1 << 30)] == [
        "unlimited",
        "unlimited",
        "0 B",
        "512 B",
        "3.4 KiB",
        "1 GiB",
    ]


def status_rows(cwd: Path) -> dict[str, list[str]]:
    """`ticketing status`'s table, each row's cells by part name (cells split on 2+ spaces)."""
    status = subprocess.run(
        [*TICKETING, "status"], cwd=cwd, capture_output=True, text=True, timeout=30
    )
    rows = [re.split(r"\s{2,}", line) for line in status.stdout.splitlines()]
    return {row[0]: row for row in rows if len(row) >= 5}


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_a_part_that_dies_is_restarted_on_its_port_and_down_stops_it(tmp_path: Path) -> None:
    port = free_port()
    up = Up(tmp_path, {**os.environ, "INGRESS_PORT": str(port)})
    run_json = tmp_path / ".data" / "run.json"
    pids: set[int] = set()
    try:
        assert up.running.wait(180), up.output
        assert up.process.poll() is None, up.output
        state = json.loads(run_json.read_text())
        pids |= {part["pid"] for part in state["parts"]}
        orders = next(part for part in state["parts"] if part["name"] == "orders")
        assert status_rows(tmp_path)["orders"][2:5] == ["alive", "0", "-"]
        environ = environ_of(orders["pid"])

        os.kill(orders["pid"], signal.SIGKILL)

        def restarted() -> dict[str, object] | None:
            parts = {p["name"]: p for p in json.loads(run_json.read_text())["parts"]}
            again = parts["orders"]
            if again["pid"] == orders["pid"] or not is_alive(again["pid"], again["started"]):
                return None
            try:
                ready = httpx.get(f"{orders['url']}/readyz", trust_env=False, timeout=2)
            except httpx.HTTPError:
                return None
            return again if ready.status_code == 200 else None

        async def back() -> dict[str, object] | None:
            return await asyncio.to_thread(restarted)

        again: dict[str, Any] = asyncio.run(eventually(back, within=60))  # type: ignore[assignment]
        pids.add(again["pid"])
        assert again["port"] == orders["port"]
        assert again["restarts"] == 1
        assert "-9" in again["last_exit"]
        assert environ_of(again["pid"]) == environ
        row = status_rows(tmp_path)["orders"]
        assert row[1:4] == [str(again["pid"]), "alive", "1"], row
        assert "exited -9" in row[4], row
        # nothing else was restarted
        others = json.loads(run_json.read_text())["parts"]
        assert all(p["restarts"] == 0 for p in others if p["name"] != "orders")
        with httpx.Client(base_url=f"http://localhost:{port}", trust_env=False) as http:
            assert http.get("/api/users/currentuser").json() == {"currentUser": None}

        down = subprocess.run([*TICKETING, "down"], cwd=tmp_path, capture_output=True, text=True)
        assert down.returncode == 0, down.stderr
        assert up.process.wait(60) == 0, up.output
        up.reader.join(10)
        assert up.lines[-1] == "stopped", up.output
        # a clean stop restarts nothing
        restarts = [line for line in up.lines if "restarted" in line or "restarting" in line]
        assert len(restarts) == 2 and all("orders" in line for line in restarts), restarts
        for pid in pids:
            assert not is_alive(pid), pid
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)
        assert not run_json.exists()
    finally:
        if up.process.poll() is None:
            subprocess.run([*TICKETING, "down"], cwd=tmp_path, timeout=90)
            up.process.wait(30)

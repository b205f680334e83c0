"""The runner's ports: a port that closed connections left in TIME_WAIT is free; a server
counts as started only once it listens itself, so one that lost its port to another stack's
server is moved, never mistaken for that one."""

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack import topology
from devstack.testing import start_stack
from devstack.topology import PREFERRED_PORTS, Ports
from ticketing_common.embedded import free_port, listens, port_is_free, wait_for_port
from ticketing_testing import TEST_JWT_KEY, bearer


def plain_bind_works(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def time_wait_port() -> Iterator[int]:
    """A port nothing listens on any more, with a connection of its left in TIME_WAIT (the
    server side closed first, as a web server closing a keep-alive connection does)."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", free_port()))
        listener.listen()
        port: int = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()  # the side that closes first keeps the TIME_WAIT
        client.recv(1)  # the FIN has arrived
        client.close()
    if plain_bind_works(port):
        pytest.skip("this kernel did not keep the connection in TIME_WAIT")
    yield port


def test_a_port_in_time_wait_is_free_for_the_runner(time_wait_port: int) -> None:
    assert port_is_free(time_wait_port)
    assert Ports().take(time_wait_port) == time_wait_port


def test_a_listening_port_is_not_free() -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_is_free(port)
        assert Ports().take(port) != port


def test_the_stack_starts_its_ingress_on_a_port_in_time_wait(
    tmp_path: Path, time_wait_port: int
) -> None:
    with start_stack(tmp_path, services=[], ingress_port=time_wait_port) as own:
        assert own.url == f"http://127.0.0.1:{time_wait_port}"
        assert httpx.get(f"{own.url}/", trust_env=False).status_code == 503


@pytest.fixture
def foreign_listener() -> Iterator[int]:
    """A port another process's server listens on (this test process stands in for it)."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_only_the_process_holding_the_socket_listens_on_the_port(foreign_listener: int) -> None:
    assert listens(os.getpid(), foreign_listener)
    with subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE) as other:
        try:
            assert not listens(other.pid, foreign_listener)
        finally:
            other.communicate(b"\n")


def test_a_server_that_lost_its_port_is_not_taken_for_started(foreign_listener: int) -> None:
    """Another server on the port answers connections: the wait is for the one it started."""
    bind = f"import socket; socket.socket().bind(('127.0.0.1', {foreign_listener}))"
    with (
        subprocess.Popen([sys.executable, "-c", bind]) as loser,
        pytest.raises(RuntimeError, match="exited with code 1 while starting"),
    ):
        wait_for_port(foreign_listener, loser, "mongo", timeout=60)


def test_the_stack_moves_a_server_whose_preferred_port_was_taken_after_the_probe(
    tmp_path: Path, foreign_listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stacks starting together both find a preferred port free; the one whose server
    loses the bind starts it on another port instead of using the other stack's server."""
    monkeypatch.setitem(PREFERRED_PORTS, "mongo", foreign_listener)
    monkeypatch.setattr(topology, "pick_port", lambda preferred: preferred)  # probed as free
    with start_stack(tmp_path, {"JWT_KEY": TEST_JWT_KEY}, services=["tickets"]) as own:
        mongo = next(part for part in own.parts if part.name == "mongo")
        assert mongo.port != foreign_listener
        assert listens(mongo.process.pid, mongo.port)
        assert own.urls["mongo"] == f"mongodb://127.0.0.1:{mongo.port}"
        sold = httpx.post(
            f"{own.url}/api/tickets",
            json={"title": "moved", "price": 5},
            headers=bearer(),
            trust_env=False,
        )
        assert sold.status_code == 201, sold.text

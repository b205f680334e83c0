"""The runner's port probe: a port that closed connections left in TIME_WAIT is free."""

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.testing import start_stack
from devstack.topology import Ports
from ticketing_common.embedded import free_port, port_is_free


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

"""Redis in the Swarm stack asks for the password of the redis_password secret.

The redis service's command and healthcheck from docker-compose.yml run on this machine with the
dev environment's redis-server and redis-cli: the secret file and the data folder moved to a
temporary folder, the image's entrypoint left out (it only drops to the redis user)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from arq.connections import RedisSettings

from ticketing_common import embedded

from .deploy import STACK_FILE, names, stack_env, stack_services

PASSWORD = "test-redis-password"


@dataclass
class Server:
    port: int
    pid: int
    tmp: Path


def rendered(text: str, tmp: Path, port: int) -> str:
    edits = {
        "/run/secrets/": f"{tmp}/secrets/",
        "exec docker-entrypoint.sh redis-server": f"exec {embedded.binary('redis-server')}",
        " --dir /data": f" --dir {tmp}/data --port {port} --bind 127.0.0.1",
        "redis-cli": f"{embedded.binary('redis-cli')} -p {port}",
    }
    for old, new in edits.items():
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("redis")
    (tmp / "secrets").mkdir()
    (tmp / "data").mkdir()
    (tmp / "secrets" / "redis_password").write_text(PASSWORD + "\n")
    (script,) = stack_services((STACK_FILE,))["redis"]["command"][2:]
    assert "exec docker-entrypoint.sh redis-server - " in script, "the entrypoint drops root"
    port = embedded.free_port()
    with (tmp / "redis.log").open("wb") as log:
        process = subprocess.Popen(
            ["sh", "-c", rendered(script, tmp, port)], stdout=log, stderr=log
        )
    try:
        embedded.wait_for_port(port, process, "redis-server", 15)
        yield Server(port, process.pid, tmp)
    finally:
        process.terminate()
        process.wait(10)


def test_redis_mounts_only_its_password_and_expiration_its_url() -> None:
    assert names(stack_services((STACK_FILE,))["redis"]["secrets"]) == {"redis_password"}
    assert stack_env("expiration", (STACK_FILE,))["REDIS_URL_FILE"] == (
        "/run/secrets/expiration_redis_url"
    )


def test_redis_refuses_a_client_without_the_password(server: Server) -> None:
    with redis.Redis(port=server.port) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with (
        redis.Redis(port=server.port, password="wrong") as wrong,
        pytest.raises(redis.AuthenticationError),
    ):
        wrong.ping()


def test_expiration_gets_in_with_the_url_of_its_secret(server: Server) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    # What expiration does with REDIS_URL (ticketing_expiration.jobs): arq's settings from it.
    settings = RedisSettings.from_dsn(url)
    assert settings.password == PASSWORD
    with redis.Redis.from_url(url) as client:
        assert client.ping()
        # The command's other options still apply: the append-only file, in the volume.
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("dir") == {"dir": str(server.tmp / "data")}


def test_the_password_is_not_in_the_process_arguments(server: Server) -> None:
    arguments = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
    assert b"redis-server" in arguments[0], arguments
    assert not any(PASSWORD.encode() in a for a in arguments)


def test_the_healthcheck_passes_with_the_password_and_fails_without(server: Server) -> None:
    test = stack_services((STACK_FILE,))["redis"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    command = rendered(test[1], server.tmp, server.port)
    assert subprocess.run(["sh", "-c", command], timeout=10, check=False).returncode == 0
    wrong = command.replace(f"{server.tmp}/secrets/redis_password", "/dev/null")
    assert wrong != command
    assert subprocess.run(["sh", "-c", wrong], timeout=10, check=False).returncode != 0

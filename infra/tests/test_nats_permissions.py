"""NATS in the Swarm stack: one user per event user, each allowed to publish only its own events.

The real nats-server (the one the dev environment runs) is started the way the stack starts it:
the nats service's command from docker-compose.yml, with the secret files, the config and the
data folder moved to a temporary folder, and infra/nats/nats.conf as the config. nats-py then
connects as the services do, with test passwords in the secrets."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ticketing_common import embedded
from ticketing_common.bus import DEAD_LETTER_PREFIX, EventBus
from ticketing_common.events import EVENT_TYPES, Subject
from ticketing_common.listener import durable_name
from ticketing_common.registry import installed_services

from .deploy import EVENT_USERS, NATS_CONF, ROOT, STACK_FILE, names, stack_services

STREAM = "TICKETING"


def _constructed(service: str, module: str) -> set[str]:
    """The subjects of the events a service constructs (`TicketCreated(` ...) in its package."""
    source = "\n".join(p.read_text() for p in (ROOT / service / module).rglob("*.py"))
    return {str(s) for s, cls in EVENT_TYPES.items() if re.search(rf"\b{cls.__name__}\(", source)}


# Which events each service publishes, read from its sources.
PUBLISHED = {s.name: _constructed(s.name, s.module) for s in installed_services()}
DEAD_LETTERS = {s: f"{DEAD_LETTER_PREFIX}.{s}" for s in EVENT_USERS}


def allowed(user: str) -> set[str]:
    return PUBLISHED[user] | {DEAD_LETTERS[user]}


def test_every_event_has_one_publisher() -> None:
    owners = {str(s): [u for u in PUBLISHED if str(s) in PUBLISHED[u]] for s in Subject}
    assert all(len(o) == 1 for o in owners.values()), owners
    assert {u for u, subjects in PUBLISHED.items() if subjects} <= set(EVENT_USERS)


def test_the_config_has_a_user_per_event_user_with_a_password_from_its_secret() -> None:
    text = NATS_CONF.read_text()
    users = dict(re.findall(r"user:\s*(\w+)\s+password:\s*\$(\w+)", text))
    assert set(users) == set(EVENT_USERS)
    nats_service = stack_services((STACK_FILE,))["nats"]
    command = nats_service["command"][-1]
    for user, variable in users.items():
        assert variable == f"{user.upper()}_NATS_PASSWORD"
        assert f'{variable}="$(cat /run/secrets/{user}_nats_password)" &&' in command
        assert re.search(rf"export [\w ]*\b{variable}\b", command)
    assert names(nats_service["secrets"]) == {f"{u}_nats_password" for u in EVENT_USERS}
    assert "password" not in re.sub(r"password:\s*\$\w+", "", text.split("authorization")[1])


@dataclass
class Server:
    port: int
    passwords: dict[str, str]

    def url(self, user: str | None = None, password: str | None = None) -> str:
        if user is None:
            return f"nats://127.0.0.1:{self.port}"
        return f"nats://{user}:{password or self.passwords[user]}@127.0.0.1:{self.port}"


def rendered_command(tmp: Path, port: int, monitor: int) -> str:
    """The stack's nats command, on this machine: secrets, config and data under `tmp`."""
    (command,) = stack_services((STACK_FILE,))["nats"]["command"][2:]
    edits = {
        "/run/secrets/": f"{tmp}/secrets/",
        "exec nats-server -c /etc/nats/nats.conf": (
            f"exec {embedded.binary('nats-server')} -c {NATS_CONF}"
        ),
        " -sd /data": f" -sd {tmp}/data",
    }
    for old, new in edits.items():
        assert old in command, old
        command = command.replace(old, new)
    return f"{command} -a 127.0.0.1 -p {port} -m {monitor}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("nats")
    (tmp / "secrets").mkdir()
    passwords = {user: f"test-{user}-password" for user in EVENT_USERS}
    for user, password in passwords.items():
        (tmp / "secrets" / f"{user}_nats_password").write_text(password + "\n")
    port, monitor = embedded.free_port(), embedded.free_port()
    with (tmp / "nats.log").open("wb") as log:
        process = subprocess.Popen(
            ["sh", "-c", rendered_command(tmp, port, monitor)], stdout=log, stderr=log
        )
    try:
        embedded.wait_for_port(port, process, "nats-server", 15)
        yield Server(port, passwords)
    finally:
        process.terminate()
        process.wait(10)


async def connect(server: Server, user: str, errors: list[str] | None = None) -> NATS:
    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(str(exc))

    return await nats.connect(
        server.url(user), error_cb=on_error, allow_reconnect=False, connect_timeout=3
    )


async def test_each_user_publishes_its_own_events_and_no_one_elses(server: Server) -> None:
    # Every user creates the streams at start, as the services do (EventBus.ensure_streams).
    for user in EVENT_USERS:
        bus = await EventBus.connect(server.url(user), name=user, stream=STREAM)
        await bus.close()
    subjects = [str(s) for s in Subject] + list(DEAD_LETTERS.values())
    for user in EVENT_USERS:
        errors: list[str] = []
        nc = await connect(server, user, errors)
        js = nc.jetstream()

        async def attempt(subject: str, js=js, user=user) -> bool:
            try:
                await js.publish(
                    subject, b"{}", timeout=1, headers={"Nats-Msg-Id": f"{user}:{subject}"}
                )
            except nats.errors.TimeoutError:
                return False
            return True

        results = await asyncio.gather(*(attempt(s) for s in subjects))
        await nc.drain()
        published = {s for s, ok in zip(subjects, results, strict=True) if ok}
        assert published == allowed(user), user
        refused = {
            m.group(1)
            for e in errors
            if (m := re.search(r'permissions violation for publish to "([^"]+)"', e, re.I))
        }
        assert refused == set(subjects) - allowed(user), errors
    # Nothing a user was refused reached the streams.
    nc = await connect(server, EVENT_USERS[0])
    js = nc.jetstream()
    stored: set[str] = set()
    for stream in (STREAM, "DEADLETTERS"):
        info = await js.stream_info(stream, subjects_filter=">")
        stored |= set(info.state.subjects or {})
    await nc.drain()
    assert stored == set().union(*(allowed(u) for u in EVENT_USERS))


async def test_another_service_pulls_and_acks_an_event(server: Server) -> None:
    publisher, consumer = "tickets", "orders"
    assert str(Subject.TICKET_CREATED) in allowed(publisher)
    bus = await EventBus.connect(server.url(publisher), name=publisher, stream=STREAM)
    ack = await bus.publish(str(Subject.TICKET_CREATED), b'{"id": "t1"}', "pull-and-ack")
    await bus.close()

    nc = await connect(server, consumer)
    js = nc.jetstream()
    durable = durable_name(consumer, str(Subject.TICKET_CREATED))
    # The consumer as the listener makes it (ticketing_common.listener), from this event on.
    await js.add_consumer(
        STREAM,
        ConsumerConfig(
            durable_name=durable,
            filter_subject=str(Subject.TICKET_CREATED),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=5,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=ack.seq,
        ),
    )
    sub = await js.pull_subscribe_bind(durable, stream=STREAM)
    (msg,) = await sub.fetch(1, timeout=5)
    assert msg.subject == str(Subject.TICKET_CREATED) and msg.data == b'{"id": "t1"}'
    await msg.ack_sync(timeout=5)  # the server answers the ack: it took it
    info = await js.consumer_info(STREAM, durable)
    assert info.num_ack_pending == 0 and info.ack_floor.stream_seq == ack.seq
    await sub.unsubscribe()
    await nc.drain()


async def test_no_subscription_outside_the_reply_inboxes(server: Server) -> None:
    errors: list[str] = []
    nc = await connect(server, "tickets", errors)
    await nc.subscribe(str(Subject.ORDER_CREATED))
    await nc.flush()
    await asyncio.sleep(0.2)
    await nc.drain()
    refusal = 'permissions violation for subscription to "order.created"'
    assert any(refusal in e.lower() for e in errors), errors


@pytest.mark.parametrize("credentials", ["none", "wrong password", "unknown user"])
async def test_a_client_without_a_users_password_is_refused(
    server: Server, credentials: str
) -> None:
    url = {
        "none": server.url(),
        "wrong password": server.url("tickets", "not-the-password"),
        "unknown user": server.url("admin", server.passwords["tickets"]),
    }[credentials]
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    with pytest.raises(Exception):  # noqa: B017  nats-py's error for a refused CONNECT
        await nats.connect(
            url,
            error_cb=on_error,
            allow_reconnect=False,
            connect_timeout=3,
            max_reconnect_attempts=0,
        )
    assert any("authorization violation" in e.lower() for e in errors), errors

"""The Stack as tests use it: the session-wide `stack` fixture and `start_stack`."""

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from redis import Redis

from devstack.processes import is_alive
from devstack.stack import FIRST_BACKOFF, STABLE_AFTER, Part, Stack, StackError, answers
from devstack.testing import start_stack
from ticketing_common.sessions import issue_token


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_the_session_stack_serves_through_its_ingress(stack: Stack) -> None:
    assert {"nats", "redis", "mongo", "stripe"} <= stack.urls.keys()
    assert "auth" in stack.service_urls
    with httpx.Client(base_url=stack.url, trust_env=False) as http:
        assert http.get("/api/users/currentuser").json() == {"currentUser": None}
        # the services share the key the stack made once and keeps in .data/jwt_key
        key = (stack.data / "jwt_key").read_text().strip()
        token = issue_token("65f000000000000000000001", "key@test.dev", key, 60)
        me = http.get("/api/users/currentuser", headers={"Authorization": f"Bearer {token}"})
        assert me.json()["currentUser"]["email"] == "key@test.dev"
    for url in stack.service_urls.values():
        assert httpx.get(f"{url}/readyz", trust_env=False).status_code == 200


def test_children_get_the_settings_of_their_part(stack: Stack) -> None:
    parts = {part.name: part for part in stack.parts}
    auth = environ_of(parts["auth"].process.pid)
    assert auth["HOST"] == "127.0.0.1"
    assert auth["PORT"] == str(parts["auth"].port)
    assert auth["MONGO_URI"] == f"{stack.urls['mongo']}/auth"
    assert auth["NATS_URL"] == stack.urls["nats"]
    assert auth["COOKIE_SECURE"] == "false"
    assert auth["STRIPE_KEY"] == "sk_test_dev"
    assert auth["STRIPE_API_BASE"] == stack.urls["stripe"]
    assert auth.get("STRIPE_WEBHOOK_SECRET") == os.environ.get("STRIPE_WEBHOOK_SECRET")
    # fakestripe posts its webhooks to payments through the ingress, signed with the secret
    # the stack made once and keeps in .data, which payments checks them with
    secret = (stack.data / "stripe_webhook_secret").read_text().strip()
    assert secret.startswith("whsec_")
    fake = environ_of(parts["stripe"].process.pid)
    assert fake["WEBHOOK_URL"] == f"{stack.url}/api/payments/webhook"
    assert fake["STRIPE_WEBHOOK_SECRET"] == secret
    if "payments" in parts:
        assert environ_of(parts["payments"].process.pid)["STRIPE_WEBHOOK_SECRET"] == secret
    if "client" in parts:
        client = environ_of(parts["client"].process.pid)
        assert client["AUTH_URL"] == stack.service_urls["auth"]
        assert "MONGO_URI" not in client or client["MONGO_URI"] == os.environ.get("MONGO_URI")
    state = json.loads((stack.data / "run.json").read_text())
    assert state["pid"] == os.getpid()
    assert {p["name"]: p["pid"] for p in state["parts"]} == {
        p.name: p.process.pid for p in stack.parts
    }


def test_a_second_stack_on_the_same_data_is_refused(stack: Stack) -> None:
    with pytest.raises(StackError, match="already runs"):
        Stack(stack.root, ingress_port=0).start()
    assert all(part.process.poll() is None for part in stack.parts)
    assert (stack.data / "run.json").exists()


def test_a_real_stripe_key_uses_the_stripe_api(tmp_path: Path) -> None:
    env = {"STRIPE_KEY": "sk_live_not_a_dev_key", "EXPIRATION_WINDOW_SECONDS": "7"}
    with start_stack(tmp_path, env, services=["auth"]) as own:
        assert "stripe" not in own.urls
        assert list(own.service_urls) == ["auth"]
        auth = environ_of(own.parts[-2].process.pid)
        assert auth["STRIPE_KEY"] == "sk_live_not_a_dev_key"
        assert "STRIPE_API_BASE" not in auth
        assert auth["EXPIRATION_WINDOW_SECONDS"] == "7"
        # no client: everything else is the ingress's 503
        answer = httpx.get(f"{own.url}/", trust_env=False)
        assert answer.status_code == 503
        assert answer.json() == {"errors": [{"message": "Service unavailable"}]}
        pids = [part.process.pid for part in own.parts]
    assert not any(is_alive(pid) for pid in pids)
    assert not (tmp_path / ".data" / "run.json").exists()


def test_fakestripe_keeps_the_webhook_secret_and_posts_to_the_ingress(tmp_path: Path) -> None:
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "stripe_webhook_secret").write_text("whsec_from_an_earlier_run\n")
    with start_stack(tmp_path, services=[]) as own:
        fake = own.urls["stripe"]
        hooks = httpx.get(f"{fake}/_test/webhooks", trust_env=False).json()
        assert hooks["url"] == f"{own.url}/api/payments/webhook"
        assert hooks["secret"] == "whsec_from_an_earlier_run"
        client = stripe.StripeClient("sk_test_dev", base_addresses={"api": fake})
        client.v1.payment_intents.create(
            params={
                "amount": 2000,
                "currency": "usd",
                "payment_method": "pm_card_visa",
                "confirm": True,
            }
        )
        # No payments service here: the ingress answers its route with a 503.
        sent = httpx.post(f"{fake}/_test/webhooks/redeliver", trust_env=False).json()["data"]
        assert [(d["type"], d["status"]) for d in sent] == [("payment_intent.succeeded", 503)]


def test_a_part_that_fails_to_start_is_named_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"auth exited with code \d+ while starting") as failed:
        Stack(tmp_path, ingress_port=0, services=["auth"], env={"ARGON2_TIME_COST": "many"}).start()
    assert "auth.log) ends with:\n" in str(failed.value)
    assert "Invalid settings" in str(failed.value)
    assert not (tmp_path / ".data" / "run.json").exists()


@pytest.mark.parametrize("name", ["redis", "mongo", "nats"])
def test_a_server_that_dies_is_restarted_on_its_port_with_its_data(
    tmp_path: Path, name: str
) -> None:
    with start_stack(tmp_path, services=[]) as own:
        server = own._part(name)
        before, url = server.process.pid, server.url
        if name == "redis":
            Redis.from_url(url).set("kept", "yes")
        os.kill(before, signal.SIGKILL)

        def recorded() -> dict[str, Any]:
            state = json.loads((own.data / "run.json").read_text())
            return next(p for p in state["parts"] if p["name"] == name)

        # run.json, what `ticketing status` reads, is written once the restart is complete.
        deadline = time.monotonic() + 60
        while (record := recorded())["pid"] == before or not answers(server.port, None):
            assert time.monotonic() < deadline, server.last_exit
            time.sleep(0.1)
        assert (record["pid"], record["restarts"]) == (server.process.pid, 1)
        assert server.restarts == 1
        assert server.last_exit == "exited -9 (SIGKILL)"
        assert server.url == url
        if name == "redis":
            assert Redis.from_url(url).get("kept") == b"yes"  # same data directory
        pids = [part.process.pid for part in own.parts] + [before]
    assert not any(is_alive(pid) for pid in pids)


def test_restarts_back_off_and_the_pause_resets_after_a_stable_run(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ingress_port=0)
    done = subprocess.Popen(["true"])
    done.wait()
    part = Part("orders", "service", done, 1, "", tmp_path / "x.log", threading.Thread())
    pauses = []
    for _ in range(7):
        now = time.monotonic()
        part.since = now
        stack._down(part, "exited 1", now)
        assert part.due is not None
        pauses.append(round(part.due - now, 3))
    assert pauses == [0.5, 1, 2, 4, 8, 10, 10]
    now = time.monotonic()
    part.since = now - STABLE_AFTER
    stack._down(part, "exited 1", now)
    assert part.due is not None and round(part.due - now, 3) == FIRST_BACKOFF

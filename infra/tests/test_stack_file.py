"""The Docker Swarm stack file (and the Stripe test file deployed on top of it): `docker stack
config` and the Compose-spec JSON schema accept them, and they declare what each service needs
(deploy policies, health checks, settings, secrets). The isolation, credentials, image tags and
the optional Stripe test file: test_stack_hardening.py."""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
import re
import shutil
from pathlib import Path

import jsonschema
import pytest

from .deploy import (
    ADDRESS_VARS,
    CREDENTIAL_SECRETS,
    DATASTORES,
    NATS_CONF,
    NGINX_CONF,
    RENDER_ENV,
    REQUIRED_ENV,
    SECRET_VALUE_NAMES,
    SERVICES,
    STACK_FILE,
    STACK_FILES,
    STACK_SECRETS,
    STRIPE_TEST_FILE,
    WEBHOOK_PATH,
    names,
    nginx_locations,
    raw_stack,
    run,
    stack,
    stack_credentials,
    stack_env,
    stack_services,
    tool,
)

VARIANTS = {"default": (STACK_FILE,), "stripe-test": STACK_FILES}


@pytest.mark.parametrize("files", VARIANTS.values(), ids=VARIANTS)
def test_docker_stack_config_accepts_the_stack_files(files: tuple[Path, ...]) -> None:
    docker = tool("docker", "/usr/local/bin/docker")
    args = [a for f in files for a in ("-c", str(f))]
    result = run(docker, "stack", "config", *args, env=RENDER_ENV)
    assert result.returncode == 0, result.stderr


def test_docker_stack_config_rejects_a_broken_copy(tmp_path: Path) -> None:
    """The validator is live: an unknown deploy key makes it fail."""
    docker = tool("docker", "/usr/local/bin/docker")
    for conf in (NGINX_CONF, NATS_CONF):
        copy_to = tmp_path / conf.relative_to(STACK_FILE.parent)
        copy_to.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(conf, copy_to)
    (tmp_path / "docker-compose.yml").write_text(STACK_FILE.read_text())
    whole = run(docker, "stack", "config", "-c", "docker-compose.yml", cwd=tmp_path, env=RENDER_ENV)
    assert whole.returncode == 0, whole.stderr
    broken = STACK_FILE.read_text().replace("max_failure_ratio: 0", "max_failure_ratios: 0")
    assert broken != STACK_FILE.read_text()
    (tmp_path / "docker-compose.yml").write_text(broken)
    result = run(
        docker, "stack", "config", "-c", "docker-compose.yml", cwd=tmp_path, env=RENDER_ENV
    )
    assert result.returncode != 0
    assert "max_failure_ratios" in result.stderr


@functools.cache
def compose_schema_validator() -> jsonschema.protocols.Validator:
    """The Compose specification's JSON schema, as vendored by check-jsonschema."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendor.joinpath("compose-spec.json").read_text())
    validator: jsonschema.protocols.Validator = jsonschema.validators.validator_for(schema)(schema)
    return validator


@pytest.mark.parametrize("path", [STACK_FILE, STRIPE_TEST_FILE], ids=lambda p: p.name)
def test_stack_files_match_the_compose_spec_schema(path: Path) -> None:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in compose_schema_validator().iter_errors(raw_stack(path))
    ]
    assert errors == []


def test_compose_spec_schema_rejects_a_broken_copy() -> None:
    broken = copy.deepcopy(raw_stack())
    broken["services"]["auth"]["deploy"]["update_config"]["order"] = "sideways"
    assert list(compose_schema_validator().iter_errors(broken))


def test_stack_runs_the_services_the_datastores_and_an_ingress() -> None:
    assert set(stack_services((STACK_FILE,))) == {*SERVICES, "ingress", *DATASTORES}
    assert set(stack_services()) == {*SERVICES, "fakestripe", "ingress", *DATASTORES}
    raw = raw_stack()["services"]
    for name in DATASTORES:
        image = raw[name]["image"]
        assert image.split(":")[0] in {"mongo", "nats", "redis"}, image
    assert raw["auth-mongo"]["image"].startswith("mongo:7.")
    # Append-only file; the password part: test_redis_auth.py.
    redis_command = " ".join(raw["redis"]["command"])
    assert "redis-server - --appendonly yes --dir /data" in redis_command
    nats_command = raw["nats"]["command"][-1].split()
    assert "-js" in nats_command
    assert nats_command[nats_command.index("-sd") + 1] == "/data"


@pytest.mark.parametrize("name", [*SERVICES, "fakestripe", "ingress", *DATASTORES])
def test_every_stack_service_has_deploy_policies_and_a_healthcheck(name: str) -> None:
    service = stack_services()[name]
    deploy = service["deploy"]
    stateful = name in DATASTORES
    # The ingress runs once on every node, on the node's port 80 (test_rate_limits.py).
    per_node = name == "ingress"
    if per_node:
        assert deploy["mode"] == "global"
    else:
        assert isinstance(deploy["replicas"], int)
        assert deploy["replicas"] == 1 if stateful else deploy["replicas"] >= 1
    # Two tasks must never share a datastore's volume (nor a host port); stateless ones overlap
    # for zero downtime.
    order = "stop-first" if stateful or per_node else "start-first"
    assert deploy["update_config"]["order"] == order
    assert deploy["update_config"]["failure_action"] == "rollback"
    assert deploy["rollback_config"]["order"] == order
    assert deploy["restart_policy"]["condition"] in {"any", "on-failure"}
    for kind in ("limits", "reservations"):
        assert deploy["resources"][kind].get("cpus"), (name, kind)
        assert deploy["resources"][kind].get("memory"), (name, kind)
    if stateful:
        assert any("node.labels." in c for c in deploy["placement"]["constraints"])
    check = service["healthcheck"]
    assert not check.get("disable", False)
    assert check["test"][0] in {"CMD", "CMD-SHELL"} and len(check["test"]) > 1
    if name in SERVICES:
        assert "/healthz" in " ".join(check["test"])


@pytest.mark.parametrize("name", SERVICES)
def test_stack_services_get_their_settings_and_secrets_as_files(name: str) -> None:
    env = stack_env(name)
    # Datastore addresses carry credentials: they come from secrets, as <NAME>_FILE.
    required = {f"{v}_FILE" if v in CREDENTIAL_SECRETS else v for v in REQUIRED_ENV[name]}
    assert required <= set(env), required - set(env)
    assert not set(CREDENTIAL_SECRETS) & set(env), "no datastore address in plain environment"
    for secret in SECRET_VALUE_NAMES:
        assert secret not in env, f"{name} carries {secret} in plain environment"
    secrets = stack_services()[name].get("secrets", [])
    mounted = {s["source"] if isinstance(s, dict) else s for s in secrets}
    for var, secret in STACK_SECRETS.items():
        if var in env:
            assert env[var] == f"/run/secrets/{secret}"
            assert secret in mounted
    if "COOKIE_SECURE" in env or name in {"auth", "client"}:
        assert env["COOKIE_SECURE"] == "true"
    assert env["API_DOCS"] == "false", "production serves no API docs"
    # Every address names a service of the stack.
    for var in ADDRESS_VARS:
        if var in env:
            host = re.match(r"^\w+://([^:/]+)", env[var])
            assert host and host.group(1) in stack_services(), (var, env[var])
    for var, secret in stack_credentials(name).items():
        assert env[var] == f"/run/secrets/{secret}"
        assert secret in mounted


def test_stack_declares_external_secrets_volumes_networks_and_configs() -> None:
    doc = stack()
    assert set(STACK_SECRETS.values()) <= set(doc["secrets"])
    for secret in doc["secrets"]:
        assert doc["secrets"][secret]["external"] is True, "secrets never live in the stack file"
    assert all(n.get("driver") == "overlay" for n in doc["networks"].values())
    for name in DATASTORES:
        mounts = stack_services()[name]["volumes"]
        named = [m for m in mounts if m["type"] == "volume"]
        assert named, name
        assert all(m["source"] in doc["volumes"] for m in named)
    expected_paths = {"nats": "/data", "redis": "/data"}
    for name in DATASTORES:
        target = expected_paths.get(name, "/data/db")
        assert target in {m["target"] for m in stack_services()[name]["volumes"]}, name
    ingress = stack_services()["ingress"]
    assert any(p["published"] in (80, "80") and p["target"] == 80 for p in ingress["ports"])
    for service, target, conf in (
        ("ingress", "/etc/nginx/nginx.conf", NGINX_CONF),
        ("nats", "/etc/nats/nats.conf", NATS_CONF),
    ):
        (config,) = stack_services()[service]["configs"]
        assert config["target"] == target
        source = doc["configs"][config["source"]]["file"]
        assert (STACK_FILE.parent / source).resolve() == conf.resolve()
    published = {n for n, s in stack_services().items() if s.get("ports")}
    assert published == {"ingress"}, "only the ingress is reachable from outside"


def test_stack_fakestripe_signs_webhooks_with_the_secret_payments_verifies() -> None:
    payments = stack_services()["payments"]
    fakestripe = stack_services()["fakestripe"]
    secret = STACK_SECRETS["STRIPE_WEBHOOK_SECRET_FILE"]
    for service in (payments, fakestripe):
        assert secret in names(service["secrets"])
    # fakestripe reads STRIPE_WEBHOOK_SECRET from its environment only: the command loads the
    # mounted file into it, then execs the server (PID 1 keeps getting the stop signal).
    command = " ".join(fakestripe["command"])
    assert f'STRIPE_WEBHOOK_SECRET="$(cat /run/secrets/{secret})"' in command
    assert "export STRIPE_WEBHOOK_SECRET" in command
    assert command.endswith("exec python -m fakestripe")
    assert "STRIPE_WEBHOOK_SECRET" not in stack_env("fakestripe"), "no secret in plain env"
    # The webhooks reach payments on the overlay network, through the ingress as from Stripe.
    url = re.match(r"^http://([\w-]+)(?::(\d+))?(/\S*)$", stack_env("fakestripe")["WEBHOOK_URL"])
    assert url, stack_env("fakestripe")["WEBHOOK_URL"]
    host, port, path = url.group(1), url.group(2) or "80", url.group(3)
    assert path == WEBHOOK_PATH
    assert host in {"ingress", "payments"}
    if host == "ingress":
        assert f"listen {port};" in NGINX_CONF.read_text()
        routes = nginx_locations()
        assert routes[max((p for p in routes if path.startswith(p)), key=len)] == "payments:3000"
    else:
        assert port == "3000"

"""Checks of the deployment files that run without a Docker engine or a cluster.

What runs here: `docker stack config` (the CLI validates without a daemon), the Compose-spec
JSON schema, `kubectl kustomize` of both overlays, `kubernetes-validate --strict` of every
rendered object, hadolint on every Dockerfile, and assertions on what the files declare.
Building images and starting containers or pods is left to an operator (README.md, "Deploying").
"""

from __future__ import annotations

import base64
import copy
import functools
import importlib.resources
import importlib.util
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from ticketing_common.registry import installed_services
from ticketing_common.settings import NatsSettings

ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = ROOT / "docker-compose.yml"
K8S = ROOT / "infra" / "k8s"
NGINX_CONF = ROOT / "infra" / "nginx" / "nginx.conf"
DEPLOY_MD = ROOT / "README.md"
K8S_VERSION = "1.32.0"

Doc = dict[str, Any]

# The services, as they declare themselves (see ticketing_common.registry).
INSTALLED = installed_services()
SERVICES = [s.name for s in INSTALLED]
DB_SERVICES = [s.name for s in INSTALLED if s.uses_mongo]
DATASTORES = [f"{s}-mongo" for s in DB_SERVICES] + ["nats", "redis"]
API_ROUTES = {s.route: s.name for s in INSTALLED if s.route and s.route != "/"}


# service -> (directory, workspace package, module run by `python -m`)
def _directory(module: str) -> str:
    """The repository folder of a service package (where its Dockerfile is)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    return str(Path(spec.origin).parent.parent.relative_to(ROOT))


IMAGES: dict[str, tuple[str, str, str]] = {
    **{s.name: (_directory(s.module), s.distribution, s.module) for s in INSTALLED},
    "fakestripe": ("infra/fakestripe", "ticketing-fakestripe", "fakestripe"),
}
# What each service needs (layout contract); *_FILE stands in for a secret value.
REQUIRED_ENV: dict[str, set[str]] = {
    "auth": {"MONGO_URI", "JWT_KEY_FILE"},
    "tickets": {"MONGO_URI", "NATS_URL", "JWT_KEY_FILE"},
    "orders": {"MONGO_URI", "NATS_URL", "JWT_KEY_FILE"},
    "payments": {
        "MONGO_URI",
        "NATS_URL",
        "JWT_KEY_FILE",
        "STRIPE_KEY_FILE",
        "STRIPE_WEBHOOK_SECRET_FILE",
    },
    "expiration": {"NATS_URL", "REDIS_URL"},
    "client": {"JWT_KEY_FILE", "AUTH_URL", "TICKETS_URL", "ORDERS_URL", "PAYMENTS_URL"},
}
SECRET_VALUE_NAMES = ("JWT_KEY", "STRIPE_KEY", "STRIPE_WEBHOOK_SECRET")
# Swarm: *_FILE setting -> secret, mounted at /run/secrets/<secret>.
STACK_SECRETS = {
    "JWT_KEY_FILE": "jwt_key",
    "STRIPE_KEY_FILE": "stripe_key",
    "STRIPE_WEBHOOK_SECRET_FILE": "stripe_webhook_secret",
}
# Kubernetes: Secret -> its one key, created by the operator in prod (README.md, "Deploying").
K8S_SECRETS = {
    "jwt-secret": "JWT_KEY",
    "stripe-secret": "STRIPE_KEY",
    "stripe-webhook-secret": "STRIPE_WEBHOOK_SECRET",
}
WEBHOOK_PATH = "/api/payments/webhook"
# What a real secret looks like: Stripe keys and webhook signing secrets.
REAL_SECRET = re.compile(r"\b(?:sk|rk)_(?:live|test)_[\w-]+|\bwhsec_[\w-]+")
FAKE_SECRET = "dev-only-not-secret"
# Settings that name another service by host.
ADDRESS_VARS = (
    "MONGO_URI",
    "NATS_URL",
    "REDIS_URL",
    "AUTH_URL",
    "TICKETS_URL",
    "ORDERS_URL",
    "PAYMENTS_URL",
)


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def tool(name: str, *candidates: str) -> str:
    """The path of a CLI, or a skip that says which one is missing."""
    for candidate in (*candidates, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip(f"{name} CLI is not installed on this machine")


# --- Docker Swarm stack -------------------------------------------------------------------


@functools.cache
def raw_stack() -> Doc:
    """The stack file as written, YAML anchors and merge keys resolved."""
    doc: Doc = yaml.safe_load(STACK_FILE.read_text())
    return doc


@functools.cache
def stack() -> Doc:
    """The stack as `docker stack config` normalises it, or the raw file without the CLI."""
    docker = shutil.which("docker") or "/usr/local/bin/docker"
    if not Path(docker).exists():
        return raw_stack()
    result = run(docker, "stack", "config", "-c", str(STACK_FILE))
    assert result.returncode == 0, result.stderr
    doc: Doc = yaml.safe_load(result.stdout)
    return doc


def stack_services() -> dict[str, Doc]:
    services: dict[str, Doc] = stack()["services"]
    return services


def stack_env(service: str) -> dict[str, str]:
    env = stack_services()[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_docker_stack_config_accepts_the_stack_file() -> None:
    docker = tool("docker", "/usr/local/bin/docker")
    result = run(docker, "stack", "config", "-c", str(STACK_FILE))
    assert result.returncode == 0, result.stderr


def test_docker_stack_config_rejects_a_broken_copy(tmp_path: Path) -> None:
    """The validator is live: an unknown deploy key makes it fail."""
    docker = tool("docker", "/usr/local/bin/docker")
    (tmp_path / "infra" / "nginx").mkdir(parents=True)
    shutil.copy(NGINX_CONF, tmp_path / "infra" / "nginx" / "nginx.conf")
    broken = STACK_FILE.read_text().replace("max_failure_ratio: 0", "max_failure_ratios: 0")
    assert broken != STACK_FILE.read_text()
    (tmp_path / "docker-compose.yml").write_text(broken)
    result = run(docker, "stack", "config", "-c", "docker-compose.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "max_failure_ratios" in result.stderr


@functools.cache
def compose_schema_validator() -> jsonschema.protocols.Validator:
    """The Compose specification's JSON schema, as vendored by check-jsonschema."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendor.joinpath("compose-spec.json").read_text())
    validator: jsonschema.protocols.Validator = jsonschema.validators.validator_for(schema)(schema)
    return validator


def test_stack_file_matches_the_compose_spec_schema() -> None:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in compose_schema_validator().iter_errors(raw_stack())
    ]
    assert errors == []


def test_compose_spec_schema_rejects_a_broken_copy() -> None:
    broken = copy.deepcopy(raw_stack())
    broken["services"]["auth"]["deploy"]["update_config"]["order"] = "sideways"
    assert list(compose_schema_validator().iter_errors(broken))


def test_stack_runs_the_services_the_datastores_and_an_ingress() -> None:
    assert set(stack_services()) == {*SERVICES, "fakestripe", "ingress", *DATASTORES}
    raw = raw_stack()["services"]
    for name in [*SERVICES, "fakestripe"]:
        assert raw[name]["image"] == f"${{REGISTRY:-ticketing}}/{name}:${{TAG:-latest}}"
    for name in DATASTORES:
        image = raw[name]["image"]
        assert image.split(":")[0] in {"mongo", "nats", "redis"}, image
    assert raw["auth-mongo"]["image"] == "mongo:7"
    assert raw["redis"]["command"][:3] == ["redis-server", "--appendonly", "yes"]
    nats_command = raw["nats"]["command"]
    assert "-js" in nats_command
    assert nats_command[nats_command.index("-sd") + 1] == "/data"


@pytest.mark.parametrize("name", [*SERVICES, "fakestripe", "ingress", *DATASTORES])
def test_every_stack_service_has_deploy_policies_and_a_healthcheck(name: str) -> None:
    service = stack_services()[name]
    deploy = service["deploy"]
    stateful = name in DATASTORES
    assert isinstance(deploy["replicas"], int)
    assert deploy["replicas"] == 1 if stateful else deploy["replicas"] >= 1
    # Two tasks must never share a datastore's volume; stateless ones overlap for zero downtime.
    order = "stop-first" if stateful else "start-first"
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
    assert REQUIRED_ENV[name] <= set(env), REQUIRED_ENV[name] - set(env)
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
    # Every address names a service of the stack.
    for var in ADDRESS_VARS:
        if var in env:
            host = re.match(r"^\w+://([^:/]+)", env[var])
            assert host and host.group(1) in stack_services(), (var, env[var])
    if "MONGO_URI" in env:
        assert env["MONGO_URI"] == f"mongodb://{name}-mongo:27017/{name}"


def test_stack_declares_external_secrets_volumes_network_and_ingress_config() -> None:
    doc = stack()
    assert set(doc["secrets"]) == set(STACK_SECRETS.values())
    for secret in STACK_SECRETS.values():
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
    (config,) = ingress["configs"]
    assert config["target"] == "/etc/nginx/nginx.conf"
    source = doc["configs"][config["source"]]["file"]
    assert (STACK_FILE.parent / source).resolve() == NGINX_CONF.resolve()
    published = {n for n, s in stack_services().items() if s.get("ports")}
    assert published == {"ingress"}, "only the ingress is reachable from outside"


def test_stack_fakestripe_signs_webhooks_with_the_secret_payments_verifies() -> None:
    payments = stack_services()["payments"]
    fakestripe = stack_services()["fakestripe"]
    secret = STACK_SECRETS["STRIPE_WEBHOOK_SECRET_FILE"]
    for service in (payments, fakestripe):
        assert secret in {s["source"] if isinstance(s, dict) else s for s in service["secrets"]}
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


def test_no_secret_value_is_committed_in_the_deployment_files() -> None:
    """Real keys and signing secrets come from the operator; only dev's fakes are in git."""
    files = [STACK_FILE, NGINX_CONF, *sorted(p for p in K8S.rglob("*") if p.is_file())]
    found = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in files
        for match in REAL_SECRET.finditer(path.read_text())
        if FAKE_SECRET not in match.group(0)
    ]
    assert found == []
    assert REAL_SECRET.search("STRIPE_WEBHOOK_SECRET=whsec_5f2a"), "the pattern is live"


def nginx_locations() -> dict[str, str]:
    """location -> what it does (the upstream service, or `return <code>`)."""
    text = NGINX_CONF.read_text()
    routes: dict[str, str] = {}
    for match in re.finditer(r"location\s+(=\s+)?(\S+)\s*\{([^}]*)\}", text):
        body = match.group(3)
        upstream = re.search(r"set \$upstream http://([\w-]+):(\d+);", body)
        if upstream:
            assert "proxy_pass $upstream;" in body
            routes[match.group(2)] = f"{upstream.group(1)}:{upstream.group(2)}"
        elif ret := re.search(r"return (\d+)", body):
            routes[match.group(2)] = f"return {ret.group(1)}"
    return routes


def test_nginx_routes_as_the_spec() -> None:
    routes = nginx_locations()
    for path, service in API_ROUTES.items():
        assert routes[path] == f"{service}:3000"
    assert routes["/"] == "client:3000"
    webhook = max((p for p in routes if WEBHOOK_PATH.startswith(p)), key=len)
    assert routes[webhook] == "payments:3000", "Stripe's webhooks go to payments"
    assert routes["/healthz"] == "return 404"
    assert routes["/readyz"] == "return 404"
    text = NGINX_CONF.read_text()
    assert "resolver 127.0.0.11" in text, "names must resolve through Swarm's DNS"
    healthcheck = " ".join(stack_services()["ingress"]["healthcheck"]["test"])
    port = re.search(r"127\.0\.0\.1:(\d+)(/\S+)", healthcheck)
    assert port and f"listen {port.group(1)};" in text and port.group(2) in routes


# --- Kubernetes ---------------------------------------------------------------------------


@functools.cache
def render(overlay: str) -> tuple[Doc, ...]:
    kubectl = tool("kubectl", "/usr/bin/kubectl")
    result = run(kubectl, "kustomize", str(K8S / "overlays" / overlay))
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def objects(overlay: str, kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in render(overlay) if d["kind"] == kind}


def containers(workload: Doc) -> list[Doc]:
    found: list[Doc] = workload["spec"]["template"]["spec"]["containers"]
    return found


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_renders_and_every_object_validates_strictly(overlay: str) -> None:
    docs = render(overlay)
    assert docs
    failures = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert failures == []


def test_kubernetes_validate_rejects_unknown_fields() -> None:
    deployment = copy.deepcopy(objects("prod", "Deployment")["auth"])
    containers(deployment)[0]["portz"] = [3000]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_everything_lives_in_the_ticketing_namespace(overlay: str) -> None:
    for doc in render(overlay):
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == "ticketing"
        else:
            assert doc["metadata"].get("namespace") == "ticketing", doc["metadata"]["name"]


def pod_specs(overlay: str) -> Iterator[tuple[str, Doc]]:
    for kind in ("Deployment", "StatefulSet"):
        for name, workload in objects(overlay, kind).items():
            yield name, workload["spec"]["template"]["spec"]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_pod_is_locked_down(overlay: str) -> None:
    """Restricted Pod Security: non-root, no escalation, no capabilities, RuntimeDefault."""
    for name, spec in pod_specs(overlay):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in sc["capabilities"], name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp must be writable"
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][part]), (name, part)
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in container, (name, probe)


@pytest.mark.parametrize("name", SERVICES)
def test_prod_runs_each_service_as_a_deployment_with_a_service(name: str) -> None:
    deployment = objects("prod", "Deployment")[name]
    service = objects("prod", "Service")[name]
    assert deployment["spec"]["replicas"] >= 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = containers(deployment)
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port_names == {"http": 3000}
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    image = container["image"]
    repository, _, tag = image.rpartition(":")
    assert repository.endswith(f"/{name}") and tag not in {"", "latest", "dev"}, image
    spec = deployment["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsUser"] != 0
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("overlay", ["dev", "prod"])
@pytest.mark.parametrize("name", SERVICES)
def test_k8s_services_get_their_settings(overlay: str, name: str) -> None:
    (container,) = containers(objects(overlay, "Deployment")[name])
    env = env_of(container)
    assert REQUIRED_ENV[name] <= set(env), REQUIRED_ENV[name] - set(env)
    for secret in SECRET_VALUE_NAMES:
        assert secret not in env, f"{name} carries {secret} in its environment"
    config = next(iter(objects(overlay, "ConfigMap").values()))["data"]

    def value(var: str) -> str:
        ref = env[var].get("valueFrom", {}).get("configMapKeyRef")
        return str(config[ref["key"]]) if ref else str(env[var]["value"])

    services = objects(overlay, "Service")
    for var in ADDRESS_VARS:
        if var in env:
            host = re.match(r"^\w+://([^:/]+)", value(var))
            assert host and host.group(1) in services, (var, value(var))
    if "MONGO_URI" in env:
        assert value("MONGO_URI") == f"mongodb://{name}-mongo:27017/{name}"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {
        v["name"]: v
        for v in objects(overlay, "Deployment")[name]["spec"]["template"]["spec"]["volumes"]
    }
    for var in STACK_SECRETS:
        if var in env:
            path = Path(value(var))
            assert str(path.parent) in mounts, var
            secret = volumes[mounts[str(path.parent)]]["secret"]
            items = {i["path"]: i["key"] for i in secret["items"]}
            assert items.get(path.name) == var.removesuffix("_FILE"), (var, items)
            assert K8S_SECRETS[secret_base(overlay, secret["secretName"])] == items[path.name]
    if "COOKIE_SECURE" in env:
        assert value("COOKIE_SECURE") == ("false" if overlay == "dev" else "true")


@pytest.mark.parametrize("name", DATASTORES)
def test_prod_runs_each_datastore_as_a_statefulset_with_a_volume(name: str) -> None:
    statefulset = objects("prod", "StatefulSet")[name]
    spec = statefulset["spec"]
    assert spec["replicas"] == 1
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    (container,) = containers(statefulset)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    expected = "/data/db" if name.endswith("-mongo") else "/data"
    assert mounts[claim["metadata"]["name"]] == expected
    headless = objects("prod", "Service")[spec["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    image = container["image"]
    assert image.split(":")[0] in {"mongo", "nats", "redis"}
    assert re.search(r":\d+\.\d+\.\d+", image), f"{image}: pin a patch version in prod"
    if name == "redis":
        assert container["args"][container["args"].index("--appendonly") + 1] == "yes"
    if name == "nats":
        assert "-js" in container["args"]
        assert container["args"][container["args"].index("-sd") + 1] == "/data"


def ingress_routes(overlay: str) -> tuple[Doc, dict[str, tuple[str, str]]]:
    (ingress,) = objects(overlay, "Ingress").values()
    (rule,) = ingress["spec"]["rules"]
    routes = {
        p["path"]: (p["backend"]["service"]["name"], p["backend"]["service"]["port"]["name"])
        for p in rule["http"]["paths"]
    }
    assert all(p["pathType"] == "Prefix" for p in rule["http"]["paths"])
    return ingress, routes


@pytest.mark.parametrize(
    ("overlay", "host"), [("dev", "ticketing.local"), ("prod", "ticketing.example.com")]
)
def test_ingress_routes_the_api_and_the_client(overlay: str, host: str) -> None:
    ingress, routes = ingress_routes(overlay)
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["rules"][0]["host"] == host
    assert {path: svc for path, (svc, _) in routes.items()} == {**API_ROUTES, "/": "client"}
    services = objects(overlay, "Service")
    for name, port in routes.values():
        assert port in {p["name"] for p in services[name]["spec"]["ports"]}


def test_prod_ingress_terminates_tls_with_cert_manager() -> None:
    ingress, _ = ingress_routes("prod")
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"]
    (tls,) = ingress["spec"]["tls"]
    assert tls["hosts"] == ["ticketing.example.com"]
    assert tls["secretName"]


def secret_base(overlay: str, name: str) -> str:
    """The Secret's name without the hash suffix that secretGenerator adds in dev."""
    return name.rsplit("-", 1)[0] if overlay == "dev" and name not in K8S_SECRETS else name


def stream_bytes(overlay: str, var: str) -> int:
    """The largest value any service of the overlay gives a stream limit (else the default)."""
    config = next(iter(objects(overlay, "ConfigMap").values()))["data"]
    values = [int(NatsSettings.model_fields[var.lower()].default)]
    for name in SERVICES:
        (container,) = containers(objects(overlay, "Deployment")[name])
        if entry := env_of(container).get(var):
            ref = entry.get("valueFrom", {}).get("configMapKeyRef")
            values.append(int(config[ref["key"]] if ref else entry["value"]))
    return max(values)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_nats_volume_holds_the_streams_jetstream_reserves(overlay: str) -> None:
    """With no max_file_store, JetStream allows 75% of the volume's free space as it starts,
    and reserves each stream's max bytes as it creates it ("insufficient storage resources
    available" otherwise): both streams must fit, with room for the filesystem's overhead."""
    nats = objects(overlay, "StatefulSet")["nats"]
    (claim,) = nats["spec"]["volumeClaimTemplates"]
    size = claim["spec"]["resources"]["requests"]["storage"]
    number, unit = re.fullmatch(r"(\d+)([KMGT]i)?", size).groups()  # type: ignore[union-attr]
    volume = int(number) * 1024 ** ("_KMGT".index(unit[0]) if unit else 0)
    reserved = stream_bytes(overlay, "NATS_STREAM_MAX_BYTES")
    reserved += stream_bytes(overlay, "NATS_DEAD_LETTER_MAX_BYTES")
    assert volume * 0.9 * 0.75 >= reserved, f"{size} is too small for {reserved} bytes of streams"
    (container,) = containers(nats)
    # A config file could set max_file_store instead: then check that value, not the volume.
    assert "-c" not in container["args"] and "--config" not in container["args"]


def test_prod_carries_no_secret_and_no_test_double() -> None:
    assert objects("prod", "Secret") == {}
    assert "fakestripe" not in objects("prod", "Deployment")
    (payments,) = containers(objects("prod", "Deployment")["payments"])
    assert "STRIPE_API_BASE" not in env_of(payments), "prod pays through Stripe itself"
    text = "\n".join(yaml.safe_dump(d) for d in render("prod"))
    assert not REAL_SECRET.search(text) and FAKE_SECRET not in text


def test_dev_secrets_are_obviously_fake_and_fakestripe_is_wired() -> None:
    secrets = objects("dev", "Secret")
    assert {secret_base("dev", n): set(s["data"]) for n, s in secrets.items()} == {
        name: {key} for name, key in K8S_SECRETS.items()
    }
    for secret in secrets.values():
        for value in secret["data"].values():
            assert FAKE_SECRET in base64.b64decode(value).decode()
    (payments,) = containers(objects("dev", "Deployment")["payments"])
    base = env_of(payments)["STRIPE_API_BASE"]["value"]
    host, port = re.match(r"http://([\w-]+):(\d+)$", base).groups()  # type: ignore[union-attr]
    fakestripe = objects("dev", "Service")[host]
    assert int(port) in {p["port"] for p in fakestripe["spec"]["ports"]}
    for image in (c["image"] for d in objects("dev", "Deployment").values() for c in containers(d)):
        assert image.endswith(":dev"), image


def test_dev_fakestripe_signs_webhooks_with_the_secret_payments_verifies() -> None:
    deployments = objects("dev", "Deployment")
    (fakestripe,) = containers(deployments["fakestripe"])
    env = env_of(fakestripe)
    url = re.match(r"^http://([\w-]+):(\d+)(/\S*)$", env["WEBHOOK_URL"]["value"])
    assert url, env["WEBHOOK_URL"]
    host, port, path = url.groups()
    assert (host, path) == ("payments", WEBHOOK_PATH)
    assert int(port) in {p["port"] for p in objects("dev", "Service")["payments"]["spec"]["ports"]}
    ref = env["STRIPE_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]
    volumes = deployments["payments"]["spec"]["template"]["spec"]["volumes"]
    verifying = {
        (v["secret"]["secretName"], i["key"])
        for v in volumes
        if "secret" in v
        for i in v["secret"]["items"]
        if i["key"] == "STRIPE_WEBHOOK_SECRET"
    }
    assert verifying == {(ref["name"], ref["key"])}, "one secret signs and verifies"
    # The base lets only ingress-nginx and the client reach the services: dev lets fakestripe in.
    allowed = [
        rule
        for policy in objects("dev", "NetworkPolicy").values()
        if policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        == "payments"
        for rule in policy["spec"]["ingress"]
        if {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "fakestripe"}}}
        in rule["from"]
    ]
    assert allowed and any(
        p["port"] in (3000, "http") for rule in allowed for p in rule["ports"]
    ), "fakestripe may reach payments on 3000"
    assert "NetworkPolicy" not in {d["kind"] for d in render("prod") if "fakestripe" in str(d)}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_referenced_secret_and_config_map_exists_or_is_documented(overlay: str) -> None:
    """Refs resolve inside the overlay, except the secrets an operator creates by hand."""
    rendered_secrets = set(objects(overlay, "Secret"))
    config_maps = set(objects(overlay, "ConfigMap"))
    external = set(K8S_SECRETS) if overlay == "prod" else set()
    docs = DEPLOY_MD.read_text()
    for name, spec in pod_specs(overlay):
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                ref = volume["secret"]["secretName"]
                assert ref in rendered_secrets | external, (name, ref)
        for container in spec["containers"]:
            for var in container.get("env", []):
                if ref := var.get("valueFrom", {}).get("configMapKeyRef"):
                    assert ref["name"] in config_maps, (name, ref)
                if ref := var.get("valueFrom", {}).get("secretKeyRef"):
                    assert ref["name"] in rendered_secrets | external, (name, ref)
    for secret, key in K8S_SECRETS.items():
        assert re.search(rf"kubectl .*create secret generic {secret} .*--from-\w+={key}", docs)
    if overlay == "prod":
        (tls,) = ingress_routes("prod")[0]["spec"]["tls"]
        assert tls["secretName"] in docs


# --- Images -------------------------------------------------------------------------------


def dockerfile(service: str) -> Path:
    return ROOT / IMAGES[service][0] / "Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


@pytest.mark.parametrize("service", list(IMAGES))
def test_dockerfile_passes_hadolint(service: str) -> None:
    hadolint = tool("hadolint", str(ROOT / ".venv" / "bin" / "hadolint"))
    result = run(hadolint, "--no-color", str(dockerfile(service)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    hadolint = tool("hadolint", str(ROOT / ".venv" / "bin" / "hadolint"))
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install uv\n")
    assert run(hadolint, "--no-color", str(bad)).returncode != 0


@pytest.mark.parametrize("service", list(IMAGES))
def test_dockerfile_builds_a_small_non_root_image_from_the_lock(service: str) -> None:
    directory, package, module = IMAGES[service]
    steps = instructions(dockerfile(service))
    froms = [args for word, args in steps if word == "FROM"]
    assert len(froms) >= 2, "multi-stage"
    assert all(f.split()[0] == "python:3.11-slim" for f in froms)
    final = len(steps) - 1 - [w for w, _ in steps][::-1].index("FROM")
    runtime = steps[final:]
    syncs = [a for w, a in steps[:final] if w == "RUN" and "uv sync" in a]
    assert syncs and all(re.search(rf"--package {package}(\s|$)", s) for s in syncs)
    assert all("--frozen" in s and "--no-dev" in s for s in syncs)
    assert "--no-editable" in syncs[-1], "the runtime stage gets the packages, not links"
    users = [a for w, a in runtime if w == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert not any(w in {"COPY", "ADD"} and "--from" not in a for w, a in runtime), (
        "the runtime stage takes only the built venv"
    )
    health = [a for w, a in runtime if w == "HEALTHCHECK"]
    assert health and "/healthz" in health[0] and "urllib" in health[0]
    cmd = [a for w, a in runtime if w == "CMD"]
    assert cmd and json.loads(cmd[-1]) == ["python", "-m", module]
    assert any(w == "EXPOSE" for w, _ in runtime)
    for word, args in steps:
        if word in {"ENV", "ARG"}:
            assert not re.search(r"(JWT_KEY|STRIPE_KEY|PASSWORD|SECRET|TOKEN)\b", args), args
    copied = {a.split()[0].rstrip("/") for w, a in steps[:final] if w == "COPY"}
    assert directory in copied


def workspace_lock() -> dict[str, Doc]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {p["name"]: p for p in lock["package"]}


def workspace_dirs(package: str, lock: dict[str, Doc]) -> set[str]:
    """The directories of `package` and of every workspace member it depends on."""
    entry = lock[package]
    source = entry.get("source", {})
    if "editable" not in source and "directory" not in source:
        return set()
    found = {source.get("editable") or source["directory"]}
    for dep in entry.get("dependencies", []):
        found |= workspace_dirs(dep["name"], lock)
    return found


@pytest.mark.parametrize("service", list(IMAGES))
def test_dockerfile_copies_every_workspace_package_it_installs(service: str) -> None:
    directory, package, module = IMAGES[service]
    pyproject = ROOT / directory / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip(f"{directory}/ has no package yet")
    project = tomllib.loads(pyproject.read_text())
    assert project["project"]["name"] == package
    shipped = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert module in [Path(p).name for p in shipped], f"the wheel must ship {module}"
    assert (ROOT / directory / module / "__main__.py").exists(), f"python -m {module}"
    lock = workspace_lock()
    assert package in lock, f"{package} is not in uv.lock: add it to the workspace and lock"
    steps = instructions(dockerfile(service))
    copied = {a.split()[0].rstrip("/") for w, a in steps if w == "COPY" and "--from" not in a}
    assert workspace_dirs(package, lock) <= copied


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        glob = line.lstrip("!").rstrip("/")
        regex = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", glob):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                part, re.escape(part)
            )
        patterns.append((negate, re.compile(regex + "(?:/.*)?$")))
    return patterns


def ignored(path: str) -> bool:
    """Docker's rule: the last matching pattern decides."""
    verdict = False
    for negate, pattern in dockerignore_patterns():
        if pattern.match(path):
            verdict = not negate
    return verdict


def test_dockerignore_keeps_sources_and_drops_the_rest() -> None:
    for kept in (
        "pyproject.toml",
        "uv.lock",
        "common/pyproject.toml",
        "common/ticketing_common/__init__.py",
        "auth/ticketing_auth/__main__.py",
        "client/ticketing_client/templates/base.html",
        "infra/fakestripe/fakestripe/__main__.py",
    ):
        assert not ignored(kept), kept
    for dropped in (
        ".venv/bin/python",
        ".uv/bin/uv",
        ".data/mongo/x",
        ".git/HEAD",
        "auth/tests/test_signup.py",
        "infra/tests/test_deploy.py",
        "common/ticketing_common/__pycache__/x.pyc",
        ".mypy_cache/x",
        "bench/run.py",
        "screenshots/home.png",
        ".env",
        "auth/.env",
    ):
        assert ignored(dropped), dropped


# --- Operator guide -----------------------------------------------------------------------


def test_deploy_guide_covers_the_operator_steps() -> None:
    text = DEPLOY_MD.read_text().replace("kubectl -n ticketing ", "kubectl ")
    for step in (
        "docker swarm init",
        "docker swarm join",
        "docker node update --label-add ticketing.data=true",
        "docker secret create jwt_key",
        "docker secret create stripe_key",
        "docker secret create stripe_webhook_secret",
        "docker stack deploy -c docker-compose.yml ticketing",
        "docker stack services ticketing",
        "docker service ps",
        "docker service logs",
        "docker service scale",
        "docker service update --image",
        "docker service rollback",
        "docker stack rm ticketing",
        "kubectl apply -k infra/k8s/overlays/dev",
        "kubectl apply -k infra/k8s/overlays/prod",
        "kubectl rollout status",
        "kubectl rollout history",
        "kubectl rollout undo",
        "kubectl port-forward",
        "kubectl scale",
        "kubectl get pvc",
        "kubectl delete -k",
        "kubectl get events",
        "CrashLoopBackOff",
    ):
        assert step in text, step
    for service in IMAGES:
        assert f"-f {IMAGES[service][0]}/Dockerfile" in text, service

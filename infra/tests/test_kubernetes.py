"""The Kubernetes overlays: `kubectl kustomize` renders both, `kubernetes-validate --strict` accepts
every object, and they declare what each workload needs (security, probes, settings, secrets)."""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from ticketing_common.settings import NatsSettings

from .deploy import (
    ADDRESS_VARS,
    DATASTORES,
    DB_SERVICES,
    DEPLOY_MD,
    EVENT_USERS,
    FAKE_SECRET,
    REAL_SECRET,
    REQUIRED_ENV,
    SECRET_VALUE_NAMES,
    SERVICES,
    STACK_SECRETS,
    WEBHOOK_PATH,
    Doc,
    ingress_routes,
    objects,
    render,
)

K8S_VERSION = "1.32.0"
# Kubernetes: Secret -> its one key, created by the operator in prod (README.md, "Deploying").
K8S_SECRETS = {
    "jwt-secret": "JWT_KEY",
    "stripe-secret": "STRIPE_KEY",
    "stripe-webhook-secret": "STRIPE_WEBHOOK_SECRET",
}
# The datastores' credentials: Secret -> its keys (prod adds each MongoDB's replica-set keyfile).
DATASTORE_SECRETS = {
    **{f"{s}-mongo-auth": {"username", "password"} for s in DB_SERVICES},
    "nats-auth": set(EVENT_USERS),
    "redis-auth": {"password"},
}
# Replicas of each datastore: a replica set or cluster of three in prod, one server in dev.
DATASTORE_REPLICAS = {
    "dev": dict.fromkeys(DATASTORES, 1),
    "prod": {**dict.fromkeys(DATASTORES, 3), "redis": 1},
}


def containers(workload: Doc) -> list[Doc]:
    found: list[Doc] = workload["spec"]["template"]["spec"]["containers"]
    return found


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def config_map(overlay: str, name: str) -> dict[str, str]:
    """The data of a ConfigMap, by its name without the generator's hash suffix."""
    (found,) = (d for n, d in objects(overlay, "ConfigMap").items() if n.rsplit("-", 1)[0] == name)
    data: dict[str, str] = found["data"]
    return data


def secret_ref(name: str, key: str) -> str:
    """What stands for a Secret's value in `resolved_env`."""
    return f"<secret {name.rsplit('-', 1)[0] if name not in SECRET_NAMES else name} {key}>"


def resolved_env(overlay: str, container: Doc) -> dict[str, str]:
    """The container's environment as the kubelet builds it: ConfigMap keys read, `$(NAME)` of an
    earlier variable filled in, `$$` as `$`; a Secret's value stands as `<secret NAME KEY>` and a
    field as `<field PATH>`."""
    values: dict[str, str] = {}
    for entry in container.get("env", []):
        source = entry.get("valueFrom", {})
        if "value" in entry:
            value = re.sub(
                r"\$\$|\$\((\w+)\)",
                lambda m: "$" if m[0] == "$$" else values.get(m[1], m[0]),
                entry["value"],
            )
        elif ref := source.get("configMapKeyRef"):
            value = config_map(overlay, ref["name"].rsplit("-", 1)[0])[ref["key"]]
        elif ref := source.get("secretKeyRef"):
            value = secret_ref(ref["name"], ref["key"])
        else:
            value = f"<field {source['fieldRef']['fieldPath']}>"
        values[entry["name"]] = value
    return values


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_renders_and_every_object_validates_strictly(overlay: str) -> None:
    docs = render(overlay)
    assert docs
    assert strict_failures(docs) == []


def strict_failures(docs: list[Doc]) -> list[str]:
    """What `kubernetes-validate --strict` refuses among rendered objects, one line each."""
    failures = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    return failures


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
    # Its autoscaler owns the replica count: two at least, and no count to reset on apply.
    assert "replicas" not in deployment["spec"]
    (hpa,) = (h for h in objects("prod", "HorizontalPodAutoscaler").values() if scales(h, name))
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def scales(hpa: Doc, deployment: str) -> bool:
    target = hpa["spec"]["scaleTargetRef"]
    return bool(target["kind"] == "Deployment" and target["name"] == deployment)


def test_dev_runs_one_replica_of_each_service_and_no_autoscaler() -> None:
    assert {
        n: d["spec"]["replicas"] for n, d in objects("dev", "Deployment").items()
    } == dict.fromkeys([*SERVICES, "fakestripe"], 1)
    assert objects("dev", "HorizontalPodAutoscaler") == {}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
@pytest.mark.parametrize("name", SERVICES)
def test_k8s_services_get_their_settings(overlay: str, name: str) -> None:
    (container,) = containers(objects(overlay, "Deployment")[name])
    env = env_of(container)
    assert REQUIRED_ENV[name] <= set(env), REQUIRED_ENV[name] - set(env)
    for secret in SECRET_VALUE_NAMES:
        assert secret not in env, f"{name} carries {secret} in its environment"
    resolved = resolved_env(overlay, container)

    def value(var: str) -> str:
        return resolved[var]

    services = objects(overlay, "Service")
    for var in ADDRESS_VARS:
        if var in env:
            # A Service, or a pod of a StatefulSet by its name (<pod>.<headless Service>).
            for host in re.findall(r"(?:^\w+://(?:[^@/]*@)?|,)([^:/,]+)", value(var)):
                assert host.split(".")[-1] in services, (var, value(var))
    if "MONGO_URI" in env:
        uri = value("MONGO_URI")
        auth = f"<secret {name}-mongo-auth username>:<secret {name}-mongo-auth password>@"
        assert uri.startswith(f"mongodb://{auth}") and f"/{name}?" in uri, uri
        assert "authSource=admin" in uri and f"{name}-mongo" in uri, uri
        if overlay == "dev":
            assert uri == f"mongodb://{auth}{name}-mongo:27017/{name}?authSource=admin"
    if "NATS_URL" in env:
        assert value("NATS_URL") == f"nats://{name}:<secret nats-auth {name}>@nats:4222"
    if "REDIS_URL" in env:
        assert value("REDIS_URL") == "redis://:<secret redis-auth password>@redis:6379/0"
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
    # API docs in dev only (SPEC section 1: production files set API_DOCS=false).
    assert value("API_DOCS") == ("true" if overlay == "dev" else "false")


@pytest.mark.parametrize("name", DATASTORES)
def test_prod_runs_each_datastore_as_a_statefulset_with_a_volume(name: str) -> None:
    statefulset = objects("prod", "StatefulSet")[name]
    spec = statefulset["spec"]
    assert spec["replicas"] == DATASTORE_REPLICAS["prod"][name]
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
        assert "--appendonly yes --dir /data" in container["args"][0]
    if name == "nats":
        conf = config_map("prod", "nats-config")["nats.conf"]
        assert container["args"] == ["-c", "/etc/nats/nats.conf"]
        assert re.search(r"(?m)^jetstream \{\s*store_dir: /data\s*\}", conf), "JetStream on /data"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_datastore_replicas(overlay: str) -> None:
    statefulsets = objects(overlay, "StatefulSet")
    assert {n: s["spec"]["replicas"] for n, s in statefulsets.items()} == DATASTORE_REPLICAS[
        overlay
    ]


def secret_base(overlay: str, name: str) -> str:
    """The Secret's name without the hash suffix that secretGenerator adds in dev."""
    return name.rsplit("-", 1)[0] if overlay == "dev" and name not in SECRET_NAMES else name


SECRET_NAMES = {*K8S_SECRETS, *DATASTORE_SECRETS}


def stream_bytes(overlay: str, var: str) -> int:
    """The largest value any service of the overlay gives a stream limit (else the default)."""
    config = config_map(overlay, "ticketing-config")
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
    # A max_file_store in the config would cap JetStream instead: then check that, not the volume.
    conf = config_map(overlay, "nats-config")
    assert not any(re.search(r"(?m)^\s*max_file_store", text) for text in conf.values())


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
        **{name: {key} for name, key in K8S_SECRETS.items()},
        **DATASTORE_SECRETS,
    }
    for secret in secrets.values():
        for key, value in secret["data"].items():
            assert key == "username" or FAKE_SECRET in base64.b64decode(value).decode(), key
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
        for rule in policy["spec"].get("ingress", [])
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
    external = SECRET_NAMES if overlay == "prod" else set()
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

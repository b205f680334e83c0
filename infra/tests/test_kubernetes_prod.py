"""The production shape of the Kubernetes overlays, read from `kubectl kustomize`: default-deny
NetworkPolicies with explicit allows, each MongoDB a replica set and NATS a JetStream cluster in
prod (one server each in dev), the datastores' credentials from Secrets, disruption budgets.

The NetworkPolicies are evaluated as the API defines them (a connection needs an egress allow at
its source and an ingress allow at its destination, once any policy selects that pod for that
direction) over the rendered pods, plus the pods outside the namespace that matter: the
ingress-nginx controller, the cluster DNS, an address on the internet and strangers."""

from __future__ import annotations

import copy
import ipaddress
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from ticketing_common import embedded

from .deploy import (
    DATASTORE_USERS,
    DB_SERVICES,
    DEPLOY_MD,
    EVENT_USERS,
    HTTP_SERVICES,
    NATS_CONF,
    SERVICES,
    Doc,
    objects,
    render,
)
from .test_kubernetes import (
    DATASTORE_REPLICAS,
    DATASTORE_SECRETS,
    config_map,
    containers,
    resolved_env,
)

OVERLAYS = ["dev", "prod"]
NAMESPACE = "ticketing"
NAME = "app.kubernetes.io/name"
MONGOS = [f"{s}-mongo" for s in DB_SERVICES]
RS_INIT = "mongo-rs-init"

# --- NetworkPolicy evaluation ----------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    name: str
    namespace: str | None  # None: an address outside the cluster
    labels: tuple[tuple[str, str], ...] = ()
    ports: tuple[tuple[str, int, str], ...] = ()  # (name, number, protocol)
    ip: str = "10.244.0.10"

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def _namespace_labels(namespace: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": namespace}


INGRESS_NGINX = Endpoint(
    "ingress-nginx",
    "ingress-nginx",
    ((NAME, "ingress-nginx"), ("app.kubernetes.io/component", "controller")),
)
KUBE_DNS = Endpoint(
    "kube-dns",
    "kube-system",
    (("k8s-app", "kube-dns"),),
    (("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")),
)
# Another pod of kube-system, one of another namespace, a pod here that no policy names.
KUBE_SYSTEM_OTHER = Endpoint("kube-system-other", "kube-system", (("k8s-app", "metrics-server"),))
ELSEWHERE = Endpoint("elsewhere", "default", ((NAME, "tickets"),))
STRANGER = Endpoint("stranger", NAMESPACE, ((NAME, "stranger"),))
INTERNET = Endpoint("internet", None, ip="203.0.113.7")
PRIVATE = Endpoint("private-network", None, ip="192.168.1.20")
OUTSIDE_PORTS = ((443, "TCP"), (80, "TCP"), (53, "UDP"))


def selects(selector: Doc | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def peer_matches(peer: Doc, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], _namespace_labels(other.namespace)):
            return False
    elif other.namespace != NAMESPACE:
        return False
    return selects(peer.get("podSelector"), other.label_map)


def port_matches(rule: Doc, dst: Endpoint, port: int, protocol: str) -> bool:
    if "ports" not in rule:
        return True
    for p in rule["ports"]:
        if p.get("protocol", "TCP") != protocol:
            continue
        wanted = p.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            numbers = {n for name, n, proto in dst.ports if name == wanted and proto == protocol}
            if port in numbers:
                return True
        elif wanted <= port <= p.get("endPort", wanted):
            return True
    return False


def policy_types(policy: Doc) -> list[str]:
    types: list[str] = policy["spec"].get("policyTypes") or (
        ["Ingress", "Egress"] if "egress" in policy["spec"] else ["Ingress"]
    )
    return types


def governing(policies: list[Doc], pod: Endpoint, direction: str) -> list[Doc]:
    """The policies that select `pod` for `direction` (Ingress or Egress)."""
    if pod.namespace != NAMESPACE:
        return []
    return [
        p
        for p in policies
        if direction in policy_types(p) and selects(p["spec"]["podSelector"], pod.label_map)
    ]


def allows(
    policies: list[Doc],
    src: Endpoint,
    dst: Endpoint,
    port: int,
    protocol: str,
    *,
    ingress_only: bool = False,
) -> bool:
    """Whether the policies let `src` open `port`/`protocol` on `dst` (with `ingress_only`,
    whether `dst`'s side lets it in, whatever `src`'s egress says)."""
    out = [] if ingress_only else governing(policies, src, "Egress")
    egress = not out or any(
        any(peer_matches(peer, dst) for peer in rule.get("to", [{}]))
        and port_matches(rule, dst, port, protocol)
        for p in out
        for rule in p["spec"].get("egress", [])
    )
    into = governing(policies, dst, "Ingress")
    ingress = not into or any(
        any(peer_matches(peer, src) for peer in rule.get("from", [{}]))
        and port_matches(rule, dst, port, protocol)
        for p in into
        for rule in p["spec"].get("ingress", [])
    )
    return egress and ingress


def pods(overlay: str) -> dict[str, Endpoint]:
    """Every workload's pods, by workload name."""
    found = {}
    for kind in ("Deployment", "StatefulSet", "Job"):
        for name, workload in objects(overlay, kind).items():
            template = workload["spec"]["template"]
            ports = tuple(
                (p.get("name", ""), p["containerPort"], p.get("protocol", "TCP"))
                for c in template["spec"]["containers"]
                for p in c.get("ports", [])
            )
            labels = tuple(sorted(template["metadata"]["labels"].items()))
            found[name] = Endpoint(name, NAMESPACE, labels, ports)
    return found


def policies_of(overlay: str) -> list[Doc]:
    return list(objects(overlay, "NetworkPolicy").values())


def connections(overlay: str, policies: list[Doc] | None = None) -> set[tuple[str, str, int, str]]:
    """Every (source, destination, port, protocol) the policies allow, among the pods, the
    outside endpoints, and every port a destination listens on (a few for the outside)."""
    policies = policies_of(overlay) if policies is None else policies
    inside = [*pods(overlay).values(), STRANGER]
    outside = [INGRESS_NGINX, KUBE_DNS, KUBE_SYSTEM_OTHER, ELSEWHERE]
    found = set()
    for src in inside + outside:
        for dst in inside + outside + [INTERNET, PRIVATE]:
            if src.namespace != NAMESPACE and dst.namespace != NAMESPACE:
                continue
            ports = {(n, proto) for _, n, proto in dst.ports} | set(OUTSIDE_PORTS)
            for port, protocol in ports:
                if allows(policies, src, dst, port, protocol):
                    found.add((src.name, dst.name, port, protocol))
    return found


def url_target(url: str) -> tuple[str, int]:
    """(Service, port) of an address (`<pod>.<service>` counts as its Service)."""
    match = re.match(r"^\w+://(?:[^@/]*@)?([^:/,]+):(\d+)", url)
    assert match, url
    return match.group(1).split(".")[-1], int(match.group(2))


def service_workload(overlay: str, service: str) -> str:
    """The workload whose pods a Service selects."""
    selector = objects(overlay, "Service")[service]["spec"]["selector"]
    (name,) = (
        n for n, pod in pods(overlay).items() if selects({"matchLabels": selector}, pod.label_map)
    )
    return name


def expected_connections(overlay: str) -> set[tuple[str, str, int, str]]:
    """What the system needs, from the settings each workload is given."""
    deployments = objects(overlay, "Deployment")
    expected = set()
    for name in HTTP_SERVICES:
        expected.add(("ingress-nginx", name, 3000, "TCP"))
    for name, deployment in deployments.items():
        (container,) = containers(deployment)
        env = resolved_env(overlay, container)
        # Every address it is given: datastores, the APIs (client), fakestripe and back (dev).
        for value in env.values():
            if re.match(r"^\w+://", value):
                target, port = url_target(value)
                expected.add((name, service_workload(overlay, target), port, "TCP"))
    # payments calls the Stripe API over HTTPS.
    expected.add(("payments", "internet", 443, "TCP"))
    # Everyone asks the cluster DNS.
    for name in pods(overlay):
        expected |= {(name, "kube-dns", 53, "UDP"), (name, "kube-dns", 53, "TCP")}
    expected |= {("stranger", "kube-dns", 53, "UDP"), ("stranger", "kube-dns", 53, "TCP")}
    if overlay == "prod":
        for mongo in MONGOS:
            expected.add((mongo, mongo, 27017, "TCP"))
            expected.add((RS_INIT, mongo, 27017, "TCP"))
        expected.add(("nats", "nats", 6222, "TCP"))
    return expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_covered_by_a_default_deny(overlay: str) -> None:
    policies = policies_of(overlay)
    deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and set(policy_types(p)) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert len(deny) == 1, "one default-deny policy for ingress and egress"
    for pod in [*pods(overlay).values(), STRANGER]:
        assert deny[0] in governing(policies, pod, "Ingress"), pod.name
        assert deny[0] in governing(policies, pod, "Egress"), pod.name
    # A pod that no policy names reaches only the DNS, and nothing reaches it.
    reached = {c for c in connections(overlay) if "stranger" in c[:2]}
    assert reached == {("stranger", "kube-dns", 53, "UDP"), ("stranger", "kube-dns", 53, "TCP")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_policies_allow_exactly_what_the_services_need(overlay: str) -> None:
    """Every connection the settings call for, and not one more (ports, peers, directions)."""
    allowed = connections(overlay)
    expected = expected_connections(overlay)
    assert allowed - expected == set(), "allowed but not needed"
    assert expected - allowed == set(), "needed but not allowed"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("datastore", [*MONGOS, "nats", "redis"])
def test_each_datastore_is_reachable_only_from_its_users(overlay: str, datastore: str) -> None:
    port = {"nats": 4222, "redis": 6379}.get(datastore, 27017)
    sources = {src for src, dst, p, _ in connections(overlay) if dst == datastore and p == port}
    users = set(DATASTORE_USERS[datastore])
    if overlay == "prod" and datastore.endswith("-mongo"):
        users |= {datastore, RS_INIT}  # its members replicate; the Job initiates the set
    assert sources == users
    # And on no other port, but the cluster routes between the NATS servers in prod.
    others = {(s, p) for s, d, p, _ in connections(overlay) if d == datastore and p != port}
    assert others == ({("nats", 6222)} if overlay == "prod" and datastore == "nats" else set())


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("datastore", [*MONGOS, "nats", "redis"])
def test_each_datastore_s_own_ingress_lets_in_only_its_users(overlay: str, datastore: str) -> None:
    """The datastore's side alone, should another pod's egress be opened too wide."""
    policies = policies_of(overlay)
    everyone = [*pods(overlay).values(), STRANGER, INGRESS_NGINX, ELSEWHERE, KUBE_SYSTEM_OTHER]
    dst = pods(overlay)[datastore]
    let_in = {
        (src.name, port)
        for src in everyone
        for _, port, protocol in dst.ports
        if allows(policies, src, dst, port, protocol, ingress_only=True)
    }
    port = {"nats": 4222, "redis": 6379}.get(datastore, 27017)
    expected = {(user, port) for user in DATASTORE_USERS[datastore]}
    if overlay == "prod" and datastore.endswith("-mongo"):
        expected |= {(datastore, port), (RS_INIT, port)}
    if overlay == "prod" and datastore == "nats":
        expected.add(("nats", 6222))
    assert let_in == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dns_is_the_only_egress_every_pod_has(overlay: str) -> None:
    allowed = connections(overlay)
    for name in pods(overlay):
        assert (name, "kube-dns", 53, "UDP") in allowed and (name, "kube-dns", 53, "TCP") in allowed
        assert not any(s == name and d == "kube-system-other" for s, d, _, _ in allowed)
    assert not any(d == "kube-dns" and p != 53 for _, d, p, _ in allowed)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_payments_leaves_the_cluster_and_only_for_https(overlay: str) -> None:
    allowed = connections(overlay)
    leaving = {(s, d, p) for s, d, p, _ in allowed if d in {"internet", "private-network"}}
    assert leaving == {("payments", "internet", 443)}


def test_the_evaluator_sees_a_missing_deny_and_a_widened_rule() -> None:
    """The checks above can fail: without the default deny a pod of another namespace gets in; a
    rule whose peers are widened lets pods of any namespace reach that datastore."""
    policies = [p for p in policies_of("prod") if p["metadata"]["name"] != "default-deny"]
    mongo = pods("prod")["tickets-mongo"]
    assert allows(policies, ELSEWHERE, pods("prod")["expiration"], 3000, "TCP")
    assert not allows(policies_of("prod"), ELSEWHERE, pods("prod")["expiration"], 3000, "TCP")
    widened = copy.deepcopy(policies_of("prod"))
    for p in widened:
        if p["metadata"]["name"] == "tickets-mongo":
            p["spec"]["ingress"][0]["from"] = [{"namespaceSelector": {}}]
    assert allows(widened, pods("prod")["orders"], mongo, 27017, "TCP") is False  # its egress
    assert allows(widened, ELSEWHERE, mongo, 27017, "TCP")
    assert not allows(policies_of("prod"), ELSEWHERE, mongo, 27017, "TCP")


# --- replica counts, disruption budgets, autoscalers -------------------------------------


def quorum_kept(replicas: int, budget: Doc) -> bool:
    """Whether a voluntary disruption the budget allows still leaves a majority up."""
    spec = budget["spec"]
    up = spec["minAvailable"] if "minAvailable" in spec else replicas - spec["maxUnavailable"]
    return bool(up > replicas // 2)


def test_prod_disruption_budgets_keep_each_cluster_s_majority() -> None:
    budgets = objects("prod", "PodDisruptionBudget")
    statefulsets = objects("prod", "StatefulSet")
    for name in [*MONGOS, "nats"]:
        labels = statefulsets[name]["spec"]["template"]["metadata"]["labels"]
        (budget,) = (b for b in budgets.values() if selects(b["spec"]["selector"], labels))
        assert quorum_kept(statefulsets[name]["spec"]["replicas"], budget), name
        assert "maxUnavailable" in budget["spec"], f"{name}: a drain may still take one member"
    for name in SERVICES:
        assert budgets[name]["spec"]["selector"]["matchLabels"] == {NAME: name}


def test_prod_autoscales_every_service_and_nothing_else() -> None:
    hpas = objects("prod", "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} == set(SERVICES)
    deployments = objects("prod", "Deployment")
    for hpa in hpas.values():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        (container,) = containers(deployments[target["name"]])
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu" and "cpu" in container["resources"]["requests"]
        assert hpa["spec"]["minReplicas"] >= 2


# --- MongoDB replica sets --------------------------------------------------------------------


def parse_uri(uri: str) -> tuple[str, str, list[str], str, dict[str, str]]:
    """(user, password, hosts, database, options) of a mongodb:// URI."""
    match = re.fullmatch(r"mongodb://([^:@]+):([^@]+)@([^/]+)/(\w+)\?(.+)", uri)
    assert match, uri
    user, password, hosts, database, query = match.groups()
    options = {k: v[0] for k, v in parse_qs(query).items()}
    return user, password, hosts.split(","), database, options


def mongod_args(overlay: str, mongo: str) -> tuple[list[str], dict[str, str]]:
    """The mongod arguments with `$(NAME)` filled in, and the container's resolved environment."""
    statefulset = objects(overlay, "StatefulSet")[mongo]
    (container,) = containers(statefulset)
    env = resolved_env(overlay, container)
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    env = {
        k: labels[m[1]] if (m := re.fullmatch(r"<field metadata\.labels\['(.+)'\]>", v)) else v
        for k, v in env.items()
    }
    args = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), a) for a in container["args"]]
    return args, env


def arg(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


@pytest.mark.parametrize("service", DB_SERVICES)
def test_prod_mongo_is_a_replica_set_that_the_service_names(service: str) -> None:
    mongo = f"{service}-mongo"
    statefulset = objects("prod", "StatefulSet")[mongo]
    args, _ = mongod_args("prod", mongo)
    assert args[0] == "mongod" and "--auth" in args
    assert arg(args, "--replSet") == mongo, "the set is named after its StatefulSet"
    replicas = statefulset["spec"]["replicas"]
    assert replicas == 3
    headless = statefulset["spec"]["serviceName"]
    service_doc = objects("prod", "Service")[headless]
    assert service_doc["spec"]["clusterIP"] == "None"
    assert service_doc["spec"].get("publishNotReadyAddresses") is True
    members = [f"{mongo}-{i}.{headless}:27017" for i in range(replicas)]
    (container,) = containers(objects("prod", "Deployment")[service])
    user, password, hosts, database, options = parse_uri(
        resolved_env("prod", container)["MONGO_URI"]
    )
    assert hosts == members
    assert options == {"replicaSet": mongo, "authSource": "admin"}
    assert database == service
    assert (user, password) == (
        f"<secret {mongo}-auth username>",
        f"<secret {mongo}-auth password>",
    )


@pytest.mark.parametrize("service", DB_SERVICES)
def test_dev_mongo_is_one_standalone_server(service: str) -> None:
    mongo = f"{service}-mongo"
    args, _ = mongod_args("dev", mongo)
    assert "--replSet" not in args and "--keyFile" not in args and "--auth" in args
    (container,) = containers(objects("dev", "Deployment")[service])
    uri = resolved_env("dev", container)["MONGO_URI"]
    assert "replicaSet" not in uri and f"@{mongo}:27017/{service}?" in uri


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("mongo", MONGOS)
def test_mongo_root_user_and_keyfile_come_from_its_secret(overlay: str, mongo: str) -> None:
    statefulset = objects(overlay, "StatefulSet")[mongo]
    spec = statefulset["spec"]["template"]["spec"]
    (container,) = containers(statefulset)
    assert container["command"] == ["docker-entrypoint.sh"], "the entrypoint creates the user"
    args, env = mongod_args(overlay, mongo)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for var, key in (
        ("MONGO_INITDB_ROOT_USERNAME_FILE", "username"),
        ("MONGO_INITDB_ROOT_PASSWORD_FILE", "password"),
    ):
        path = Path(env[var])
        secret = volumes[mounts[str(path.parent)]]["secret"]
        assert secret["secretName"].startswith(f"{mongo}-auth") and path.name == key
    keyfile = arg(args, "--keyFile")
    if overlay == "dev":
        assert keyfile is None
        return
    # The keyfile: copied from the Secret by the init container into a volume of its own.
    assert keyfile
    keydir = str(Path(keyfile).parent)
    assert "emptyDir" in volumes[mounts[keydir]]
    (init,) = spec["initContainers"]
    init_mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    script = " ".join(init["args"])
    assert f"cp {init_mounts['mongo-auth']}/keyfile {keyfile}" in script
    assert f"chmod 0400 {keyfile}" in script
    assert volumes["mongo-auth"]["secret"]["secretName"] == f"{mongo}-auth"
    assert init_mounts[mounts[keydir]] == keydir


def test_prod_rs_init_job_initiates_every_set_idempotently() -> None:
    (job,) = objects("prod", "Job").values()
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    statefulsets = objects("prod", "StatefulSet")
    replica_sets = {n for n in statefulsets if arg(mongod_args("prod", n)[0], "--replSet")}
    assert set(env["REPLICA_SETS"].split()) == replica_sets == set(MONGOS)
    for name in replica_sets:
        assert int(env["MEMBERS"]) == statefulsets[name]["spec"]["replicas"]
        assert statefulsets[name]["spec"]["serviceName"] == name, "members are <set>-<i>.<set>"
    script = container["args"][0]
    assert "`${set}-${i}.${set}:27017`" in script, "the members' names, as the URIs give them"
    assert "replSetGetStatus" in script and '"NotYetInitialized"' in script, "initiates once"
    assert "replSetInitiate: { _id: set," in script
    assert "$(" not in script, "Kubernetes would expand $(...) in args"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for name in replica_sets:
        assert volumes[mounts[f"/run/secrets/{name}"]]["secret"]["secretName"] == f"{name}-auth"
    assert spec["restartPolicy"] == "OnFailure" and job["spec"]["backoffLimit"] > 0
    assert objects("dev", "Job") == {}


# --- NATS --------------------------------------------------------------------------------


def nats_conf(overlay: str) -> dict[str, str]:
    return config_map(overlay, "nats-config")


def authorization(text: str) -> list[str]:
    """The authorization block's lines, without comments and blanks."""
    block = text[text.index("authorization {") :]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_users_are_the_swarm_stack_s_with_passwords_from_the_secret(overlay: str) -> None:
    conf = nats_conf(overlay)["nats.conf"]
    assert authorization(conf) == authorization(NATS_CONF.read_text())
    (container,) = containers(objects(overlay, "StatefulSet")["nats"])
    env = resolved_env(overlay, container)
    users = dict(re.findall(r"user:\s*(\w+)\s+password:\s*\$(\w+)", conf))
    assert set(users) == set(EVENT_USERS)
    for user, variable in users.items():
        # Quoted, so that NATS reads the value as a string.
        assert env[variable] == f'"<secret nats-auth {user}>"', variable
    for user in EVENT_USERS:
        (service,) = containers(objects(overlay, "Deployment")[user])
        url = resolved_env(overlay, service)["NATS_URL"]
        assert url.startswith(f"nats://{user}:<secret nats-auth {user}>@"), url


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_cluster_wiring(overlay: str) -> None:
    statefulset = objects(overlay, "StatefulSet")["nats"]
    replicas = statefulset["spec"]["replicas"]
    assert replicas == DATASTORE_REPLICAS[overlay]["nats"]
    (container,) = containers(statefulset)
    env = resolved_env(overlay, container)
    conf = nats_conf(overlay)
    assert re.search(r"(?m)^server_name: \$POD_NAME$", conf["nats.conf"])
    assert env["POD_NAME"] == "<field metadata.name>"
    assert re.search(r"(?m)^include cluster\.conf$", conf["nats.conf"])
    cluster = re.search(r"cluster \{(.*)\}", conf["cluster.conf"], re.S)
    if overlay == "dev":
        assert cluster is None, "one server, no routes"
        return
    assert cluster
    port = int(re.search(r"\bport: (\d+)", cluster.group(1)).group(1))  # type: ignore[union-attr]
    routes = re.findall(r"nats://([\w.-]+):(\d+)", cluster.group(1))
    headless = statefulset["spec"]["serviceName"]
    assert routes == [(f"nats-{i}.{headless}", str(port)) for i in range(replicas)]
    assert {"cluster": port} == {
        p["name"]: p["containerPort"] for p in container["ports"] if p["name"] == "cluster"
    }
    routes_service = objects("prod", "Service")[headless]
    assert routes_service["spec"]["clusterIP"] == "None"
    assert routes_service["spec"]["publishNotReadyAddresses"] is True
    assert port in {p["port"] for p in routes_service["spec"]["ports"]}
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    # The clients' Service lists the ready servers only.
    clients = objects("prod", "Service")["nats"]
    assert not clients["spec"].get("publishNotReadyAddresses")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_streams_are_replicated_on_every_nats_server(overlay: str) -> None:
    replicas = objects(overlay, "StatefulSet")["nats"]["spec"]["replicas"]
    for user in EVENT_USERS:
        (container,) = containers(objects(overlay, "Deployment")[user])
        assert resolved_env(overlay, container)["NATS_STREAM_REPLICAS"] == str(replicas), user


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_server_accepts_the_rendered_config(overlay: str, tmp_path: Path) -> None:
    """`nats-server -t` (the dev environment's server) parses each overlay's files as mounted."""
    for name, text in nats_conf(overlay).items():
        (tmp_path / name).write_text(text)
    (container,) = containers(objects(overlay, "StatefulSet")["nats"])
    env = {
        k: re.sub(r"<secret nats-auth (\w+)>", r"pw-\1-12k", v)
        for k, v in resolved_env(overlay, container).items()
    }
    env["POD_NAME"] = "nats-0"
    result = subprocess.run(
        [embedded.binary("nats-server"), "-t", "-c", str(tmp_path / "nats.conf")],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert container["args"] == ["-c", "/etc/nats/nats.conf"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/etc/nats"] == "config"


# --- Redis ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_asks_for_the_password_its_one_user_has(overlay: str) -> None:
    (container,) = containers(objects(overlay, "StatefulSet")["redis"])
    env = resolved_env(overlay, container)
    assert env["REDISCLI_AUTH"] == "<secret redis-auth password>"
    (script,) = container["args"]
    script = script.replace("$$", "$")
    assert re.search(r"redis-server - .*<<CONF\nrequirepass \$REDISCLI_AUTH\nCONF", script)
    assert "PONG" in " ".join(container["readinessProbe"]["exec"]["command"])
    (expiration,) = containers(objects(overlay, "Deployment")["expiration"])
    url = resolved_env(overlay, expiration)["REDIS_URL"]
    assert url.startswith("redis://:<secret redis-auth password>@redis:")


# --- Secrets ---------------------------------------------------------------------------------


def secrets_read(overlay: str, spec: Doc) -> set[str]:
    """The Secrets a pod reads (volumes and variables), without dev's hash suffix."""
    names = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    for c in [*spec["containers"], *spec.get("initContainers", [])]:
        names |= {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
    return {n.rsplit("-", 1)[0] if overlay == "dev" else n for n in names}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_datastore_secret_is_read_by_its_datastore_and_users_only(overlay: str) -> None:
    readers: dict[str, set[str]] = {}
    for kind in ("Deployment", "StatefulSet", "Job"):
        for name, workload in objects(overlay, kind).items():
            for secret in secrets_read(overlay, workload["spec"]["template"]["spec"]):
                readers.setdefault(secret, set()).add(name)
    expected = {
        **{
            f"{m}-auth": {m, *DATASTORE_USERS[m]} | ({RS_INIT} if overlay == "prod" else set())
            for m in MONGOS
        },
        "nats-auth": {"nats", *DATASTORE_USERS["nats"]},
        "redis-auth": {"redis", *DATASTORE_USERS["redis"]},
    }
    assert {k: v for k, v in readers.items() if k in DATASTORE_SECRETS} == expected


def test_the_guide_creates_every_datastore_secret() -> None:
    text = DEPLOY_MD.read_text()
    for secret, keys in DATASTORE_SECRETS.items():
        generic = re.sub(r"^(auth|tickets|orders|payments)-", "${svc}-", secret)
        created = re.search(
            rf"create secret generic \"?({secret}|{re.escape(generic)})\"?(.*)", text
        )
        assert created, secret
        for key in keys:
            assert f"--from-literal={key}=" in created.group(
                2
            ) or f"--from-file={key}=" in created.group(2)
    assert "--from-literal=keyfile=" in text or "--from-file=keyfile=" in text


def test_rendered_prod_still_has_every_kind_of_object() -> None:
    kinds = {d["kind"] for d in render("prod")}
    assert {"NetworkPolicy", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Job"} <= kinds

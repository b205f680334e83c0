"""Observability, optional on both deployments: the kustomize component
infra/k8s/components/observability and the Swarm file docker-compose.observability.yml run
Prometheus (scraping every replica's /metrics), an OpenTelemetry Collector (the services' traces
by OTLP) and Grafana (Prometheus as data source, infra/observability/grafana/dashboards/*.json).

The dashboard is checked against Grafana's own model of a dashboard (grafana-foundation-sdk, the
types Grafana generates from its schema for the pinned release): every field known, every value of
its type. Every query names metric series that the services export, read from
`ticketing_common.metrics.Metrics` itself. The overlays that include the component render, pass
`kubernetes-validate --strict`, and their NetworkPolicies allow exactly what the base allows plus
what observability needs; the Swarm file deploys on top of the stack file and keeps each service
away from every other but Prometheus and the collector."""

from __future__ import annotations

import copy
import enum
import functools
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from ticketing_common.metrics import Metrics

from . import test_kubernetes as k8s_checks
from .deploy import (
    DATASTORES,
    K8S,
    RENDER_ENV,
    ROOT,
    SERVICES,
    STACK_FILE,
    STRIPE_TEST_FILE,
    Doc,
    names,
    objects,
    raw_stack,
    reachable,
    render,
    run,
    stack,
    stack_env,
    stack_services,
    tool,
)
from .test_kubernetes import containers, resolved_env, strict_failures
from .test_kubernetes_prod import (
    allows,
    connections,
    expected_connections,
    pods,
    policies_of,
)
from .test_stack_file import compose_schema_validator

OBSERVABILITY = ROOT / "infra" / "observability"
COMPONENT = K8S / "components" / "observability"
SWARM_FILE = ROOT / "docker-compose.observability.yml"
DASHBOARDS = sorted((OBSERVABILITY / "grafana" / "dashboards").glob("*.json"))
DATASOURCES = OBSERVABILITY / "grafana" / "provisioning" / "datasources.yaml"
PROVIDERS = OBSERVABILITY / "grafana" / "provisioning" / "dashboards.yaml"
COLLECTOR_CONF = OBSERVABILITY / "otel-collector" / "config.yaml"
PROMETHEUS_CONF = {
    "kubernetes": OBSERVABILITY / "prometheus" / "kubernetes.yml",
    "swarm": OBSERVABILITY / "prometheus" / "swarm.yml",
}
# The workloads observability adds, and what the services are told.
OBSERVERS = ("prometheus", "otel-collector", "grafana")
OTLP_ENDPOINT = "http://otel-collector:4318"
OTLP_PORTS = (4317, 4318)
# Labels a series gets from Prometheus rather than from the service: the scrape's job and
# instance, and `service`, which both scrape configurations set (test_prometheus_*).
TARGET_LABELS = frozenset({"job", "instance", "service"})


def load(path: Path) -> Any:
    return (
        json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    )


# --- what the services export ---------------------------------------------------------------


@functools.cache
def exported() -> dict[str, frozenset[str]]:
    """Every series name the services serve -> its labels, from the project's own metric families
    (one child of each made, so that the registry yields the samples with their suffixes:
    `_total` of a counter, `_bucket`/`_sum`/`_count` and `le` of a histogram)."""
    metrics = Metrics()
    for family in vars(metrics).values():
        if isinstance(family, MetricWrapperBase) and family._labelnames:
            family.labels(*("x" for _ in family._labelnames))
    found: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in found.items()}


@functools.cache
def families() -> frozenset[str]:
    return frozenset(family.name for family in Metrics().registry.collect())


def family_of(series: str) -> str:
    (family,) = {f for f in families() if series == f or re.fullmatch(rf"{f}_[a-z]+", series)}
    return family


# --- PromQL: the metric names and labels a query uses ----------------------------------------

PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
    | {"and", "or", "unless", "offset", "inf", "nan"}
)
LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
PROMQL_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      |(?P<range>\[[^\]]*\])
      |(?P<duration>(?:\d+(?:ms|[smhdwy]))+)
      |(?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?)
      |(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
      |(?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=,(){}])
      |(?P<space>\s+)""",
    re.X,
)


def grafana_free(expr: str) -> str:
    """A panel's query as Prometheus gets it: Grafana's variables filled in."""
    expr = re.sub(r"\$__(?:rate_interval|interval|range)\b", "5m", expr)
    return re.sub(r"\$\{?\w+(?::\w+)?\}?", ".*", expr)


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) of a PromQL expression. A name followed by `(` (or by `by` or
    `without`) is a function or aggregation; names in `by (...)` and the like, and left of a
    matcher in `{...}`, are labels; every other name (not a keyword) is a metric."""
    tokens = []
    at = 0
    expr = grafana_free(expr)
    while at < len(expr):
        match = PROMQL_TOKEN.match(expr, at)
        assert match, f"cannot read {expr[at:]!r} in {expr!r}"
        at = match.end()
        if match.lastgroup != "space":
            tokens.append((match.lastgroup, match.group()))
    metrics: set[str] = set()
    labels: set[str] = set()
    depth_in_braces = 0
    in_label_list = False
    for i, (kind, text) in enumerate(tokens):
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if text == "{":
            depth_in_braces += 1
        elif text == "}":
            depth_in_braces -= 1
        elif text == ")" and in_label_list:
            in_label_list = False
        elif kind == "ident":
            if depth_in_braces or in_label_list:
                labels.add(text)
            elif text in LABEL_LISTS:
                in_label_list = following == "("
            elif following in {"(", "by", "without"} or text in PROMQL_KEYWORDS:
                continue
            else:
                metrics.add(text)
    labels.discard("__name__")
    return metrics, labels


def test_the_promql_reader_finds_metrics_and_labels() -> None:
    metrics, labels = promql_names(
        'histogram_quantile(0.95, sum by (service, le) (rate(a_bucket{route=~"/x", s!="y"}'
        "[$__rate_interval]))) / on (service) group_left b_total > bool 0 or c offset 5m"
    )
    assert metrics == {"a_bucket", "b_total", "c"}
    assert labels == {"service", "le", "route", "s"}


# --- the dashboard in Grafana's schema --------------------------------------------------------


@functools.cache
def grafana_model() -> Any:
    """grafana-foundation-sdk's dashboard model, with every panel and query type registered."""
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models import dashboard

    register_default_plugins()
    return dashboard.Dashboard


def _type_errors(value: Any, hint: Any, path: str) -> list[str]:
    """Where `value` is not of the type the model declares for it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any or hint is object or isinstance(hint, typing.TypeVar):
        return _model_errors(value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return []
        tries = [_type_errors(value, a, path) for a in args if a is not type(None)]
        return [] if any(not t for t in tries) else min(tries, key=len)
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r} is not one of {args}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: {type(value).__name__} is not a list"]
        return [e for i, v in enumerate(value) for e in _type_errors(v, args[0], f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__} is not an object"]
        return [e for k, v in value.items() for e in _type_errors(v, args[1], f"{path}.{k}")]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if isinstance(value, hint) or value in {m.value for m in hint}:
            return []
        return [f"{path}: {value!r} is not one of {[m.value for m in hint]}"]
    scalars = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}
    if hint in scalars:
        ok = isinstance(value, scalars[hint]) and (hint is bool or not isinstance(value, bool))
        return [] if ok else [f"{path}: {value!r} is not {hint.__name__}"]
    if isinstance(hint, type):
        if isinstance(value, dict) and hasattr(hint, "from_json"):
            value = hint.from_json(value)  # a part the model keeps as it came
        if not isinstance(value, hint):
            return [f"{path}: {type(value).__name__} is not {hint.__name__}"]
        return _model_errors(value, path)
    raise AssertionError(f"{path}: no check for the type {hint!r}")


def _model_errors(obj: Any, path: str) -> list[str]:
    if not type(obj).__module__.startswith("grafana_foundation_sdk."):
        return []
    hints = typing.get_type_hints(type(obj))
    return [
        e for n, hint in hints.items() for e in _type_errors(getattr(obj, n), hint, f"{path}.{n}")
    ]


def _lost(original: Any, again: Any, path: str = "") -> list[str]:
    """What of `original` did not come back (an unknown field, a value read otherwise)."""
    if isinstance(original, dict):
        if not isinstance(again, dict):
            return [f"{path}: became {again!r}"]
        return [
            e
            for k, v in original.items()
            for e in (_lost(v, again[k], f"{path}/{k}") if k in again else [f"{path}/{k}: unknown"])
        ]
    if isinstance(original, list):
        if not isinstance(again, list) or len(again) != len(original):
            return [f"{path}: became {again!r}"]
        return [
            e
            for i, (a, b) in enumerate(zip(original, again, strict=True))
            for e in _lost(a, b, f"{path}[{i}]")
        ]
    if original != again or type(original) is not type(again):
        return [f"{path}: {original!r} became {again!r}"]
    return []


def schema_errors(doc: Doc) -> list[str]:
    """Grafana's model reads the dashboard and writes it back the same (every field known), and
    each value is of its declared type."""
    dashboard_model = grafana_model()
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    model = dashboard_model.from_json(doc)
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    errors = _lost(doc, again) + _model_errors(model, "dashboard")
    if doc.get("schemaVersion") != dashboard_model().schema_version:
        errors.append(f"schemaVersion {doc.get('schemaVersion')}, the model's is a different one")
    return errors


def test_there_is_a_dashboard() -> None:
    assert [p.name for p in DASHBOARDS] == ["ticketing.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_loads_in_grafana_s_schema(path: Path) -> None:
    doc = load(path)
    assert schema_errors(doc) == []
    assert re.fullmatch(r"[\w-]{8,40}", doc["uid"]), "a stable uid"
    assert doc["title"]


def test_the_schema_check_rejects_a_broken_copy() -> None:
    doc = load(DASHBOARDS[0])
    assert schema_errors(doc) == []
    for breaks in (
        lambda d: d["panels"][1]["gridPos"].update(h="8"),
        lambda d: d["panels"][1].update(titel="typo"),
        lambda d: d.update(graphTooltip=7),
        lambda d: d.update(schemaVersion=d["schemaVersion"] + 1),
        lambda d: next(p for p in d["panels"] if p["type"] == "timeseries")["options"][
            "legend"
        ].update(displayMode="sideways"),
        lambda d: next(p for p in d["panels"] if "targets" in p)["targets"][0].update(expr=3),
    ):
        broken = copy.deepcopy(doc)
        breaks(broken)
        assert schema_errors(broken), broken


def panels(doc: Doc) -> list[Doc]:
    """Every panel, those inside collapsed rows too."""
    found = []
    for panel in doc["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries(doc: Doc) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel query and query variable."""
    found = [
        (f"panel {p['title']!r} {t['refId']}", t["expr"])
        for p in panels(doc)
        for t in p.get("targets", [])
    ]
    for variable in doc.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((?:(.+),\s*)?(\w+)\)", text)
            assert inner, text
            found.append((f"variable {variable['name']}", inner.group(1) or ""))
    return [(where, expr) for where, expr in found if expr]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_names_series_the_services_export(path: Path) -> None:
    doc = load(path)
    series = exported()
    used = set()
    for where, expr in queries(doc):
        metrics, labels = promql_names(expr)
        assert metrics, f"{where}: no metric in {expr}"
        unknown = metrics - set(series)
        assert not unknown, f"{where}: {sorted(unknown)} not exported ({expr})"
        known_labels = TARGET_LABELS.union(*(series[m] for m in metrics))
        assert labels <= known_labels, f"{where}: labels {sorted(labels - known_labels)}"
        used |= {family_of(m) for m in metrics}
    # And the other way round: every family the services serve is on the dashboard.
    assert families() - used == set(), "families with no panel"


def test_the_query_check_sees_a_name_that_is_not_exported() -> None:
    series = exported()
    assert "ticketing_http_requests_total" in series
    assert "ticketing_http_request_duration_seconds_bucket" in series
    assert "le" in series["ticketing_http_request_duration_seconds_bucket"]
    for wrong in ("ticketing_http_requests", "ticketing_http_request_duration_seconds"):
        assert wrong not in series, "a counter is served as _total, a histogram by its parts"
    assert not promql_names("rate(ticketing_http_requests_count[5m])")[0] <= set(series)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_has_queries_on_the_provisioned_data_source(path: Path) -> None:
    (source,) = load(DATASOURCES)["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    ref = {"type": "prometheus", "uid": source["uid"]}
    for panel in panels(load(path)):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == ref, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"] == ref for t in panel["targets"]), panel["title"]
    for variable in load(path)["templating"]["list"]:
        assert variable["datasource"] == ref


def test_dashboard_shows_the_funnel_errors_latency_lag_backlog_and_dead_letters() -> None:
    titles = " ".join(p["title"].lower() for p in panels(load(DASHBOARDS[0])))
    for topic in ("funnel", "errors", "latency", "lag", "outbox", "dead letters"):
        assert topic in titles, topic


# --- Prometheus and the collector --------------------------------------------------------------


def scrape_targets(where: str) -> dict[str, str]:
    """DNS name -> the `service` label that the scrape configuration gives its targets."""
    conf = load(PROMETHEUS_CONF[where])
    (job,) = conf["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["type"] == "A" and sd["port"] == 3000
    (relabel,) = job["relabel_configs"]
    assert relabel["source_labels"] == ["__meta_dns_name"]
    assert relabel["target_label"] == "service"
    found = {}
    for name in sd["names"]:
        match = re.fullmatch(relabel["regex"], name)
        assert match, name
        found[name] = match.expand(relabel["replacement"].replace("$", "\\"))
    return found


def test_prometheus_scrapes_every_replica_of_every_service() -> None:
    assert scrape_targets("kubernetes") == {f"{s}-metrics": s for s in SERVICES}
    assert scrape_targets("swarm") == {f"tasks.{s}": s for s in SERVICES}


def test_the_collector_receives_otlp_and_every_pipeline_part_is_defined() -> None:
    conf = load(COLLECTOR_CONF)
    protocols = conf["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    assert int(OTLP_ENDPOINT.rsplit(":", 1)[1]) == 4318
    pipelines = conf["service"]["pipelines"]
    assert set(pipelines) == {"traces"}, "metrics are scraped, not pushed"
    for kind in ("receivers", "processors", "exporters"):
        used = {c for p in pipelines.values() for c in p.get(kind, [])}
        assert used == set(conf.get(kind, {})), kind


# --- Kubernetes: the component on top of each overlay ---------------------------------------


@pytest.fixture(scope="module", params=["prod", "dev"])
def overlay(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A kustomization of the overlay with the component, as an operator writes it (README.md):
    its path, which `render` and `objects` take as they take an overlay's name."""
    where = tmp_path_factory.mktemp(f"{request.param}-observability")
    relative = functools.partial(os.path.relpath, start=where)
    (where / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "ticketing",
                "resources": [relative(K8S / "overlays" / request.param)],
                "components": [relative(COMPONENT)],
            }
        )
    )
    tool("kubectl", "/usr/bin/kubectl")
    return str(where)


def base_of(overlay: str) -> str:
    return "prod" if "prod-observability" in overlay else "dev"


def test_with_the_component_every_object_validates_strictly(overlay: str) -> None:
    docs = render(overlay)
    assert len(docs) > len(render(base_of(overlay)))
    assert strict_failures(docs) == []
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "ticketing", doc["metadata"]["name"]


def test_the_component_adds_only_observability(overlay: str) -> None:
    """The overlay's own objects are all there, unchanged but for the services' settings."""
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    before = {key(d): d for d in render(base_of(overlay))}
    after = {key(d): d for d in render(overlay)}
    assert set(before) <= set(after)
    added = {n for kind, n in set(after) - set(before) if kind != "ConfigMap"}
    assert added == {
        *OBSERVERS,
        *(f"{s}-metrics" for s in SERVICES),
        "services-from-prometheus",
        "services-to-otel-collector",
    }
    for k, doc in before.items():
        if k[0] == "Deployment" and k[1] in SERVICES:
            continue
        assert after[k] == doc, k
    assert objects(overlay, "Secret") == objects(base_of(overlay), "Secret"), "no Secret added"


def test_observers_are_locked_down_with_probes_and_pinned_images(overlay: str) -> None:
    k8s_checks.test_every_pod_is_locked_down(overlay)
    workloads = {**objects(overlay, "Deployment"), **objects(overlay, "StatefulSet")}
    for name in OBSERVERS:
        (container,) = containers(workloads[name])
        image, _, tag = container["image"].rpartition(":")
        assert image and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), container["image"]
    swarm = raw_stack(SWARM_FILE)["services"]
    for name in OBSERVERS:
        (container,) = containers(workloads[name])
        assert swarm[name]["image"] == container["image"], "the same release in both"


def test_every_service_sends_traces_to_the_collector_under_its_name(overlay: str) -> None:
    deployments = objects(overlay, "Deployment")
    collector = objects(overlay, "Service")["otel-collector"]
    assert {p["port"] for p in collector["spec"]["ports"]} == set(OTLP_PORTS)
    for name in SERVICES:
        (container,) = containers(deployments[name])
        env = resolved_env(overlay, container)
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == OTLP_ENDPOINT, name
        field = re.fullmatch(r"<field metadata\.labels\['([\w./-]+)'\]>", env["OTEL_SERVICE_NAME"])
        assert field, env["OTEL_SERVICE_NAME"]
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert labels[field.group(1)] == name
    for name in OBSERVERS:
        (container,) = containers(deployments.get(name) or objects(overlay, "StatefulSet")[name])
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in resolved_env(overlay, container), name


def test_each_metrics_service_lists_exactly_one_service_s_pods(overlay: str) -> None:
    all_pods = pods(overlay)
    services = objects(overlay, "Service")
    for name in SERVICES:
        metrics = services[f"{name}-metrics"]
        assert metrics["spec"]["clusterIP"] == "None", "one DNS record per pod"
        selector = metrics["spec"]["selector"]
        chosen = {n for n, p in all_pods.items() if selector.items() <= p.label_map.items()}
        assert chosen == {name}
        (port,) = metrics["spec"]["ports"]
        assert port["port"] == 3000
        (container,) = containers(objects(overlay, "Deployment")[name])
        assert {"name": "http", "containerPort": 3000} in container["ports"]


def config_map_data(overlay: str, name: str) -> dict[str, str]:
    (found,) = (d for n, d in objects(overlay, "ConfigMap").items() if n.rsplit("-", 1)[0] == name)
    data: dict[str, str] = found["data"]
    return data


def mounted(overlay: str, workload: Doc, path: str) -> Doc:
    """The volume mounted at `path` in the workload's one container."""
    (container,) = containers(workload)
    (mount,) = (m for m in container["volumeMounts"] if m["mountPath"] == path)
    (volume,) = (
        v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    )
    return volume


def configmap_files(overlay: str, volume: Doc) -> dict[str, str]:
    """file name -> text, of a ConfigMap volume as mounted."""
    ref = volume["configMap"]
    data = config_map_data(overlay, ref["name"].rsplit("-", 1)[0])
    items = ref.get("items") or [{"key": k, "path": k} for k in data]
    return {item["path"]: data[item["key"]] for item in items}


def test_the_configuration_is_the_repository_s_files_where_each_reads_it(overlay: str) -> None:
    prometheus = objects(overlay, "StatefulSet")["prometheus"]
    (container,) = containers(prometheus)
    config = next(a for a in container["args"] if a.startswith("--config.file="))
    folder, file = config.removeprefix("--config.file=").rsplit("/", 1)
    volume = mounted(overlay, prometheus, folder)
    assert configmap_files(overlay, volume) == {file: PROMETHEUS_CONF["kubernetes"].read_text()}
    (claim,) = prometheus["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/prometheus"} in container[
        "volumeMounts"
    ], "the time series on the claim"

    collector = objects(overlay, "Deployment")["otel-collector"]
    (container,) = containers(collector)
    folder, file = container["args"][0].removeprefix("--config=").rsplit("/", 1)
    assert configmap_files(overlay, mounted(overlay, collector, folder)) == {
        file: COLLECTOR_CONF.read_text()
    }

    grafana = objects(overlay, "Deployment")["grafana"]
    sources = configmap_files(
        overlay, mounted(overlay, grafana, "/etc/grafana/provisioning/datasources")
    )
    assert list(sources.values()) == [DATASOURCES.read_text()]
    providers = configmap_files(
        overlay, mounted(overlay, grafana, "/etc/grafana/provisioning/dashboards")
    )
    assert list(providers.values()) == [PROVIDERS.read_text()]
    (provider,) = load(PROVIDERS)["providers"]
    dashboards = configmap_files(overlay, mounted(overlay, grafana, provider["options"]["path"]))
    assert dashboards == {p.name: p.read_text() for p in DASHBOARDS}
    (container,) = containers(grafana)
    env = resolved_env(overlay, container)
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/ticketing.json"


def test_grafana_s_admin_password_comes_from_the_documented_secret(overlay: str) -> None:
    grafana = objects(overlay, "Deployment")["grafana"]
    (container,) = containers(grafana)
    env = resolved_env(overlay, container)
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    folder, key = env["GF_SECURITY_ADMIN_PASSWORD__FILE"].rsplit("/", 1)
    secret = mounted(overlay, grafana, folder)["secret"]
    assert secret["secretName"] == "grafana-admin"
    assert [i["key"] for i in secret["items"]] == [key]
    assert "grafana-admin" not in objects(overlay, "Secret"), "the operator creates it"
    guide = (COMPONENT / "kustomization.yaml").read_text()
    assert re.search(rf"create secret generic grafana-admin --from-literal={key}=", guide)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def observability_connections(overlay: str) -> set[tuple[str, str, int, str]]:
    """What observability needs on top of the overlay: Prometheus scrapes every service, every
    service sends OTLP to the collector (gRPC or HTTP), Grafana queries Prometheus, and the new
    pods ask the DNS."""
    needed = {("grafana", "prometheus", 9090, "TCP")}
    for name in SERVICES:
        needed.add(("prometheus", name, 3000, "TCP"))
        needed |= {(name, "otel-collector", port, "TCP") for port in OTLP_PORTS}
    for name in OBSERVERS:
        needed |= {(name, "kube-dns", 53, "UDP"), (name, "kube-dns", 53, "TCP")}
    return needed


def test_the_policies_allow_exactly_the_overlay_s_connections_and_observability_s(
    overlay: str,
) -> None:
    allowed = connections(overlay)
    expected = expected_connections(base_of(overlay)) | observability_connections(overlay)
    assert allowed - expected == set(), "allowed but not needed"
    assert expected - allowed == set(), "needed but not allowed"
    # What the settings call for is among them (the services' OTLP address included).
    assert expected_connections(overlay) <= allowed


def test_no_one_else_reaches_the_observers_or_the_services_metrics(overlay: str) -> None:
    """Each side on its own: Prometheus's and the collector's ingress, the services' new one."""
    policies = policies_of(overlay)
    everyone = pods(overlay)
    for dst, port, sources in (
        ("prometheus", 9090, {"grafana"}),
        ("otel-collector", 4317, set(SERVICES)),
        ("otel-collector", 4318, set(SERVICES)),
        ("grafana", 3000, set()),
    ):
        let_in = {
            s
            for s, src in everyone.items()
            if allows(policies, src, everyone[dst], port, "TCP", ingress_only=True)
        }
        assert let_in == sources, dst
    for datastore in DATASTORES:
        assert not any(
            allows(policies, everyone[o], everyone[datastore], p, "TCP")
            for o in OBSERVERS
            for _, p, _ in everyone[datastore].ports
        ), datastore


def test_without_the_component_nothing_of_it_is_rendered() -> None:
    for name in ("dev", "prod"):
        text = yaml.safe_dump_all(render(name))
        assert "otel-collector" not in text and "prometheus" not in text, name


# --- Swarm: the optional file on top of the stack file ---------------------------------------

SWARM_VARIANTS = {
    "default": (STACK_FILE, SWARM_FILE),
    "stripe-test": (STACK_FILE, STRIPE_TEST_FILE, SWARM_FILE),
}


@pytest.mark.parametrize("files", SWARM_VARIANTS.values(), ids=SWARM_VARIANTS)
def test_docker_stack_config_accepts_the_observability_file(files: tuple[Path, ...]) -> None:
    docker = tool("docker", "/usr/local/bin/docker")
    args = [a for f in files for a in ("-c", str(f))]
    result = run(docker, "stack", "config", *args, env=RENDER_ENV)
    assert result.returncode == 0, result.stderr


def test_docker_stack_config_rejects_a_broken_observability_file(tmp_path: Path) -> None:
    docker = tool("docker", "/usr/local/bin/docker")
    broken = SWARM_FILE.read_text().replace("monitor: 30s", "monitors: 30s", 1)
    assert broken != SWARM_FILE.read_text()
    (tmp_path / SWARM_FILE.name).write_text(broken)
    result = run(
        docker,
        "stack",
        "config",
        "-c",
        str(STACK_FILE),
        "-c",
        str(tmp_path / SWARM_FILE.name),
        env=RENDER_ENV,
    )
    assert result.returncode != 0 and "monitors" in result.stderr


def test_the_observability_file_matches_the_compose_spec_schema() -> None:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in compose_schema_validator().iter_errors(raw_stack(SWARM_FILE))
    ]
    assert errors == []


FILES = SWARM_VARIANTS["default"]


def test_swarm_services_send_traces_to_the_collector_under_their_names() -> None:
    for name in SERVICES:
        env = stack_env(name, FILES)
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == OTLP_ENDPOINT, name
        assert env["OTEL_SERVICE_NAME"] == name
        # The stack file's settings are kept.
        assert stack_env(name, (STACK_FILE,)).items() <= env.items(), name
    assert "otel-collector" in stack_services(FILES)


@pytest.mark.parametrize("name", OBSERVERS)
def test_swarm_observers_have_deploy_policies_limits_and_pinned_images(name: str) -> None:
    service = stack_services(FILES)[name]
    deploy = service["deploy"]
    assert deploy["replicas"] == 1
    assert deploy["update_config"]["failure_action"] == "rollback"
    assert deploy["restart_policy"]["condition"] == "any"
    for kind in ("limits", "reservations"):
        assert {"cpus", "memory"} <= set(deploy["resources"][kind]), kind
    image, _, tag = raw_stack(SWARM_FILE)["services"][name]["image"].rpartition(":")
    assert image and re.fullmatch(r"v?\d+\.\d+\.\d+", tag)
    check = service["healthcheck"]
    if name == "otel-collector":
        assert check == {"disable": True}, "its image has no shell or client to probe with"
    else:
        assert check["test"][0] == "CMD" and "http://127.0.0.1:" in " ".join(check["test"])
    if "volumes" in service:
        assert "node.labels.ticketing.data == true" in deploy["placement"]["constraints"]
        assert deploy["update_config"]["order"] == "stop-first"


def test_swarm_isolation_each_service_reaches_only_prometheus_and_the_collector_more() -> None:
    networks = stack(FILES)["networks"]
    for name in SERVICES:
        before = reachable(name, (STACK_FILE,))
        assert reachable(name, FILES) == before | {"prometheus", "otel-collector"}, name
    for name in DATASTORES:
        assert reachable(name, FILES) == reachable(name, (STACK_FILE,)), name
    assert reachable("prometheus", FILES) == {*SERVICES, "otel-collector", "grafana"}
    assert reachable("grafana", FILES) == {"prometheus"}
    added = set(networks) - set(stack((STACK_FILE,))["networks"])
    for network in added:
        assert bool(networks[network].get("internal")) == (network != "grafana-net"), network
    published = {n for n, s in stack_services(FILES).items() if s.get("ports")}
    assert published == {"ingress", "grafana"}


def test_swarm_configs_are_the_repository_s_files_where_each_reads_them() -> None:
    doc = stack(FILES)
    services = stack_services(FILES)

    def config_file(service: str, target: str) -> Path:
        (config,) = (c for c in services[service]["configs"] if c["target"] == target)
        return (SWARM_FILE.parent / doc["configs"][config["source"]]["file"]).resolve()

    flag = next(a for a in services["prometheus"]["command"] if a.startswith("--config.file="))
    assert config_file("prometheus", flag.split("=", 1)[1]) == PROMETHEUS_CONF["swarm"]
    flag = services["otel-collector"]["command"][0]
    assert config_file("otel-collector", flag.split("=", 1)[1]) == COLLECTOR_CONF
    provisioning = "/etc/grafana/provisioning"
    assert config_file("grafana", f"{provisioning}/datasources/prometheus.yaml") == DATASOURCES
    assert config_file("grafana", f"{provisioning}/dashboards/ticketing.yaml") == PROVIDERS
    (provider,) = load(PROVIDERS)["providers"]
    for dashboard in DASHBOARDS:
        target = f"{provider['options']['path']}/{dashboard.name}"
        assert config_file("grafana", target) == dashboard
    env = stack_env("grafana", FILES)
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert "grafana_admin_password" in names(services["grafana"]["secrets"])
    assert doc["secrets"]["grafana_admin_password"]["external"] is True
    assert env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == (
        f"{provider['options']['path']}/ticketing.json"
    )
    for name, config in raw_stack(SWARM_FILE)["configs"].items():
        assert config["name"].endswith("_${OBSERVABILITY_CONF_VERSION:-1}"), name

"""The ingress routes as the SPEC says: nginx.conf in the Swarm stack, the Ingress in Kubernetes."""

from __future__ import annotations

import re

import pytest

from .deploy import (
    API_ROUTES,
    INTERNAL_INGRESS,
    INTERNAL_PATHS,
    NGINX_CONF,
    WEBHOOK_PATH,
    ingress_paths,
    ingress_routes,
    nginx_locations,
    objects,
    stack_services,
)


def test_nginx_routes_as_the_spec() -> None:
    routes = nginx_locations()
    for path, service in API_ROUTES.items():
        assert routes[path] == f"{service}:3000"
    assert routes["/"] == "client:3000"
    webhook = max((p for p in routes if WEBHOOK_PATH.startswith(p)), key=len)
    assert routes[webhook] == "payments:3000", "Stripe's webhooks go to payments"
    for path in INTERNAL_PATHS:
        assert routes[path] == "return 404", path
    text = NGINX_CONF.read_text()
    assert "resolver 127.0.0.11" in text, "names must resolve through Swarm's DNS"
    healthcheck = " ".join(stack_services()["ingress"]["healthcheck"]["test"])
    port = re.search(r"127\.0\.0\.1:(\d+)(/\S+)", healthcheck)
    assert port and f"listen {port.group(1)};" in text and port.group(2) in routes


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


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_probes_and_metrics_are_refused_to_every_address(overlay: str) -> None:
    """`/` reaches the client, so its `/metrics` would be public but for an exact-path Ingress
    on the same host that ingress-nginx refuses (403) whatever the client's address."""
    ingresses = objects(overlay, "Ingress")
    internal = ingresses[INTERNAL_INGRESS]
    assert {path: kind for path, (kind, _, _) in ingress_paths(internal).items()} == {
        path: "Exact" for path in INTERNAL_PATHS
    }
    denied = internal["metadata"]["annotations"][
        "nginx.ingress.kubernetes.io/denylist-source-range"
    ]
    assert set(denied.split(",")) == {"0.0.0.0/0", "::/0"}
    hosts = {i["spec"]["rules"][0].get("host") for i in ingresses.values()}
    assert len(hosts) == 1, "one host: the exact paths win over the client's `/` there"
    assert internal["spec"]["ingressClassName"] == "nginx"
    assert internal["spec"].get("tls") == ingresses["ticketing"]["spec"].get("tls")

"""What the deployment checks share: the files, the services as they declare themselves, what each
deployment must give them, and the stack file, nginx.conf and overlays as the tools read them.

The checks run without a Docker engine or a cluster (`docker stack config`, the Compose-spec JSON
schema, `kubectl kustomize`, `kubernetes-validate --strict`, hadolint); building images and starting
containers or pods is left to an operator (README.md, "Deploying").
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml

from ticketing_common.registry import GROUP, installed_services

ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = ROOT / "docker-compose.yml"
# Stripe test mode, deployed on top of the stack file: fakestripe, and payments pointed at it.
STRIPE_TEST_FILE = ROOT / "docker-compose.stripe-test.yml"
# Every service either way: the stack file with the Stripe test file.
STACK_FILES = (STACK_FILE, STRIPE_TEST_FILE)
NATS_CONF = ROOT / "infra" / "nats" / "nats.conf"
# The one image recipe: build arguments choose the service (see IMAGES and build_args).
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "infra" / "k8s"
NGINX_CONF = ROOT / "infra" / "nginx" / "nginx.conf"
DEPLOY_MD = ROOT / "README.md"

Doc = dict[str, Any]

# The services, as they declare themselves (see ticketing_common.registry).
INSTALLED = installed_services()
SERVICES = [s.name for s in INSTALLED]
DB_SERVICES = [s.name for s in INSTALLED if s.uses_mongo]
DATASTORES = [f"{s}-mongo" for s in DB_SERVICES] + ["nats", "redis"]
API_ROUTES = {s.route: s.name for s in INSTALLED if s.route and s.route != "/"}
# What the ingress routes to: the APIs and the client's pages.
HTTP_SERVICES = [s.name for s in INSTALLED if s.route]
EVENT_USERS = [s.name for s in INSTALLED if s.uses_nats]


@functools.cache
def settings_names(service: str) -> frozenset[str]:
    """The settings (environment names) the service reads, from its declaration."""
    (entry,) = (e for e in entry_points(group=GROUP) if e.name == service)
    return frozenset(name.upper() for name in entry.load().settings.model_fields)


REDIS_USERS = [s.name for s in INSTALLED if "REDIS_URL" in settings_names(s.name)]
# Datastore -> the services that use it: the only ones that may reach it.
DATASTORE_USERS: dict[str, set[str]] = {
    **{f"{s}-mongo": {s} for s in DB_SERVICES},
    "nats": set(EVENT_USERS),
    "redis": set(REDIS_USERS),
}


# service -> (directory, workspace package, module run by `python -m`): the Dockerfile's build
# arguments SOURCE, PACKAGE and MODULE for its image.
def _directory(module: str) -> str:
    """The repository folder of a service package."""
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
# Swarm: the settings that carry a datastore's credentials come from the service's own secret,
# `<NAME>_FILE` -> /run/secrets/<service>_<datastore>_<kind> (ticketing_common.settings reads any
# setting from `<NAME>_FILE`).
CREDENTIAL_SECRETS = {
    "MONGO_URI": "{service}_mongo_uri",
    "NATS_URL": "{service}_nats_url",
    "REDIS_URL": "{service}_redis_url",
}


def stack_credentials(service: str) -> dict[str, str]:
    """`<NAME>_FILE` -> secret, for each datastore address (with credentials) the service reads."""
    return {
        f"{name}_FILE": secret.format(service=service)
        for name, secret in CREDENTIAL_SECRETS.items()
        if name in settings_names(service)
    }


# What each datastore reads from its secrets: the root user of each MongoDB, the NATS users'
# passwords, Redis's requirepass.
DATASTORE_SECRETS: dict[str, set[str]] = {
    **{f"{s}-mongo": {"mongo_root_username", f"{s}_mongo_root_password"} for s in DB_SERVICES},
    "nats": {f"{s}_nats_password" for s in EVENT_USERS},
    "redis": {"redis_password"},
}
# The images the project builds; the others (datastores, nginx) are official images.
PROJECT_IMAGE = re.compile(r"^\$\{REGISTRY:-ticketing\}/(?P<name>[\w-]+):\$\{TAG:\?[^}]+\}$")
# Any TAG will do to render the stack: the files require one.
RENDER_ENV = {"TAG": "0.0.0-test"}
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


def run(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a CLI; `env`, if given, is added to this process's environment."""
    return subprocess.run(
        args,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env} if env is not None else None,
    )


def tool(name: str, *candidates: str) -> str:
    """The path of a CLI, or a skip that says which one is missing."""
    for candidate in (*candidates, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip(f"{name} CLI is not installed on this machine")


# --- Docker Swarm stack -------------------------------------------------------------------


@functools.cache
def raw_stack(path: Path = STACK_FILE) -> Doc:
    """A stack file as written, YAML anchors and merge keys resolved."""
    doc: Doc = yaml.safe_load(path.read_text())
    return doc


def docker_cli() -> str | None:
    docker = shutil.which("docker") or "/usr/local/bin/docker"
    return docker if Path(docker).exists() else None


def stack_config(
    *files: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`docker stack config -c FILE ...`: the files merged, interpolated and normalised."""
    docker = docker_cli()
    assert docker, "docker CLI"
    return run(docker, "stack", "config", *(a for f in files for a in ("-c", str(f))), env=env)


def _merged(base: Any, extra: Any) -> Any:
    """A later stack file over an earlier one, roughly as `docker stack config` merges them."""
    if isinstance(base, dict) and isinstance(extra, dict):
        return {k: _merged(base[k], v) if k in base else v for k, v in {**base, **extra}.items()}
    if isinstance(base, list) and isinstance(extra, list):
        return base + [item for item in extra if item not in base]
    return extra


@functools.cache
def stack(files: tuple[Path, ...] = STACK_FILES) -> Doc:
    """The stack of `files` (by default the stack file with the Stripe test file, so that every
    image's service is there) as `docker stack config` merges and normalises it, or the raw files
    merged without the CLI."""
    if docker_cli() is None:
        doc: Doc = {}
        for path in files:
            doc = _merged(doc, raw_stack(path))
        return doc
    result = stack_config(*files, env=RENDER_ENV)
    assert result.returncode == 0, result.stderr
    rendered: Doc = yaml.safe_load(result.stdout)
    return rendered


def default_stack() -> Doc:
    """What `docker stack deploy -c docker-compose.yml` runs: the real Stripe API, no fakestripe."""
    return stack((STACK_FILE,))


def stack_services(files: tuple[Path, ...] = STACK_FILES) -> dict[str, Doc]:
    services: dict[str, Doc] = stack(files)["services"]
    return services


def names(value: list[Any] | dict[str, Any] | None) -> set[str]:
    """The names of a service's networks or secrets, in any of the ways Compose writes them."""
    if isinstance(value, dict):
        return set(value)
    return {item["source"] if isinstance(item, dict) else item for item in value or []}


def network_members(files: tuple[Path, ...] = STACK_FILES) -> dict[str, set[str]]:
    """network -> the services attached to it."""
    members: dict[str, set[str]] = {n: set() for n in stack(files).get("networks", {})}
    for name, service in stack_services(files).items():
        for network in names(service.get("networks")):
            members.setdefault(network, set()).add(name)
    return members


def reachable(service: str, files: tuple[Path, ...] = STACK_FILES) -> set[str]:
    """The other services that share a network with `service`."""
    found = set()
    for members in network_members(files).values():
        if service in members:
            found |= members
    return found - {service}


def _mapping(value: dict[str, Any] | list[str] | None) -> dict[str, str]:
    """A Compose mapping, written as a mapping or as a list of NAME=value."""
    if isinstance(value, list):
        value = dict(item.split("=", 1) for item in value)
    return {k: str(v) for k, v in (value or {}).items()}


def stack_env(service: str, files: tuple[Path, ...] = STACK_FILES) -> dict[str, str]:
    return _mapping(stack_services(files)[service].get("environment"))


def build_args(service: str) -> dict[str, str]:
    """The build arguments the stack file gives the image of `service`."""
    return _mapping(stack_services()[service].get("build", {}).get("args"))


# --- nginx (the Swarm ingress) --------------------------------------------------------------


def nginx_directives(text: str | None = None) -> str:
    """nginx.conf (or `text`) without its comments (the file has no `#` in quoted strings)."""
    return re.sub(r"#[^\n]*", "", NGINX_CONF.read_text() if text is None else text)


def _block_end(text: str, start: int) -> int:
    """Where the block opened just before `start` closes: braces in quoted strings don't count."""
    depth, quote, at = 1, "", start
    while depth:
        char = text[at]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        else:
            depth += {"{": 1, "}": -1}.get(char, 0)
        at += 1
    return at - 1


def nginx_blocks() -> dict[str, str]:
    """location (`= /path`, `/prefix` or `@name`) -> the directives inside it."""
    text = nginx_directives()
    blocks = {}
    for match in re.finditer(r"location\s+((?:=\s+)?\S+)\s*\{", text):
        blocks[re.sub(r"\s+", " ", match.group(1))] = text[
            match.end() : _block_end(text, match.end())
        ]
    return blocks


def nginx_locations() -> dict[str, str]:
    """location path -> what it does (the upstream service, or `return <code>`)."""
    routes: dict[str, str] = {}
    for location, body in nginx_blocks().items():
        path = location.removeprefix("= ")
        upstream = re.search(r"set \$upstream http://([\w-]+):(\d+);", body)
        if upstream:
            assert "proxy_pass $upstream;" in body
            routes[path] = f"{upstream.group(1)}:{upstream.group(2)}"
        elif not path.startswith("@") and (ret := re.search(r"return (\d+)", body)):
            routes[path] = f"return {ret.group(1)}"
    return routes


# --- Kubernetes ---------------------------------------------------------------------------


@functools.cache
def render(overlay: str) -> tuple[Doc, ...]:
    kubectl = tool("kubectl", "/usr/bin/kubectl")
    result = run(kubectl, "kustomize", str(K8S / "overlays" / overlay))
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def objects(overlay: str, kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in render(overlay) if d["kind"] == kind}


# The Ingress that routes by prefix, and the one that limits sign-ins and sign-ups.
MAIN_INGRESS = "ticketing"
SIGNIN_INGRESS = "ticketing-signin"
INTERNAL_INGRESS = "ticketing-internal"
# A pod's own endpoints: for the kubelet and Prometheus on its port, never through an ingress.
INTERNAL_PATHS = ("/metrics", "/healthz", "/readyz")


def ingress_paths(ingress: Doc) -> dict[str, tuple[str, str, str]]:
    """path -> (path type, service, port name) of an Ingress's one rule."""
    (rule,) = ingress["spec"]["rules"]
    return {
        p["path"]: (
            p["pathType"],
            p["backend"]["service"]["name"],
            p["backend"]["service"]["port"]["name"],
        )
        for p in rule["http"]["paths"]
    }


def ingress_routes(overlay: str) -> tuple[Doc, dict[str, tuple[str, str]]]:
    ingress = objects(overlay, "Ingress")[MAIN_INGRESS]
    paths = ingress_paths(ingress)
    assert all(kind == "Prefix" for kind, _, _ in paths.values())
    return ingress, {path: (svc, port) for path, (_, svc, port) in paths.items()}

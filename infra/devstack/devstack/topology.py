"""What runs and how it is wired: which services, with which environment, ports and routes."""

from __future__ import annotations

import importlib.util
import json
import secrets
from collections.abc import Iterable, Mapping

from ticketing_common.embedded import free_port, pick_port
from ticketing_common.registry import Installed, installed_services

DEV_STRIPE_KEY = "sk_test_dev"
WEBHOOK_PATH = "/api/payments/webhook"
DEFAULT_INGRESS_PORT = 8080
# Not the standard ports, so servers already running on this machine keep theirs.
PREFERRED_PORTS = {"nats": 14222, "redis": 16379, "mongo": 27117}
# The kinds of part (server, stripe, service, ingress), in the order they stop.
STOP_ORDER = ("ingress", "service", "stripe", "server")


def ingress_port(environ: Mapping[str, str], requested: int | None) -> int:
    """The port asked for, else $INGRESS_PORT, else 8080; 0 is any free port."""
    if requested is None:
        return int(environ.get("INGRESS_PORT") or DEFAULT_INGRESS_PORT)
    return requested


def wanted(names: Iterable[str] | None) -> tuple[Installed, ...]:
    """Every installed service (each declares itself), or only those named."""
    known = {s.name: s for s in installed_services()}
    return tuple(known[n] for n in names) if names is not None else tuple(known.values())


def runnable(module: str) -> bool:
    """A service is started only once its package can run (`python -m <module>`)."""
    try:
        return importlib.util.find_spec(f"{module}.__main__") is not None
    except ImportError:
        return False


class Ports:
    """The ports one stack hands out: never the same one to two parts."""

    def __init__(self) -> None:
        self.taken: set[int] = set()

    def take(self, preferred: int | None = None) -> int:
        """`preferred` when it is free, else any free port."""
        port = pick_port(preferred) if preferred else free_port()
        while port in self.taken:
            port = free_port()
        self.taken.add(port)
        return port

    def claim(self, port: int) -> None:
        self.taken.add(port)

    def clear(self) -> None:
        self.taken.clear()


def fakes_stripe(stripe_key: str) -> bool:
    """A dev key runs the Stripe test server; a real key means the Stripe API."""
    return stripe_key.startswith(DEV_STRIPE_KEY)


def new_jwt_key() -> str:
    return secrets.token_urlsafe(48)


def new_webhook_secret() -> str:
    return f"whsec_{secrets.token_hex(24)}"


def services_env(
    environ: Mapping[str, str], *, nats: str, redis: str, jwt_key: str, stripe_key: str
) -> dict[str, str]:
    """What every service gets: the servers' URLs, the shared keys, dev cookies."""
    return {
        "PYTHONUNBUFFERED": "1",
        "HOST": "127.0.0.1",
        "NATS_URL": nats,
        "REDIS_URL": redis,
        "JWT_KEY": jwt_key,
        "COOKIE_SECURE": "false",
        "STRIPE_KEY": stripe_key,
        "NO_PROXY": ",".join(filter(None, [environ.get("NO_PROXY", ""), "127.0.0.1,localhost"])),
    }


def tracing_env(environ: Mapping[str, str], folder: str) -> dict[str, str]:
    """Traces on, into span files under `folder`, unless TRACES_DIR says otherwise (empty: off);
    spans reach the files within half a second, for `ticketing trace`."""
    return {
        "TRACES_DIR": environ.get("TRACES_DIR", folder),
        "OTEL_BSP_SCHEDULE_DELAY": environ.get("OTEL_BSP_SCHEDULE_DELAY", "500"),
    }


def stripe_env(ingress_port: int, webhook_secret: str) -> dict[str, str]:
    """The Stripe test server's: it signs webhooks with the secret payments checks them with."""
    return {
        "HOST": "127.0.0.1",
        # Through the ingress, as Stripe reaches the payments service.
        "WEBHOOK_URL": f"http://127.0.0.1:{ingress_port}{WEBHOOK_PATH}",
        "STRIPE_WEBHOOK_SECRET": webhook_secret,
    }


def api_urls(
    services: Iterable[Installed], ports: Mapping[str, int], ingress_port: int
) -> dict[str, str]:
    """`<NAME>_URL` of each API service, for those that call it (the client calls them all)."""
    urls = {}
    for service in services:
        if service.route and service.route != "/":
            # A skipped service's URL is the ingress, which answers its routes with the SPEC 503.
            port = ports.get(service.name, ingress_port)
            urls[f"{service.name.upper()}_URL"] = f"http://127.0.0.1:{port}"
    return urls


def service_env(
    service: Installed, common: Mapping[str, str], *, mongo: str, webhook_secret: str
) -> dict[str, str]:
    """One service's: what every service gets, its own database, and for payments the secret
    that Stripe's webhook signatures are checked with."""
    own = {"MONGO_URI": f"{mongo}/{service.name}"} if service.uses_mongo else {}
    if service.name == "payments" and webhook_secret:
        own["STRIPE_WEBHOOK_SECRET"] = webhook_secret
    return {**common, **own}


def routes(services: Iterable[Installed], urls: Mapping[str, str]) -> dict[str, str]:
    """The ingress's table: each running service's path prefix -> its URL."""
    return {s.route: urls[s.name] for s in services if s.route and s.name in urls}


def ingress_env(routes: Mapping[str, str]) -> dict[str, str]:
    """The dev ingress's: it listens on 127.0.0.1 and proxies by `routes`."""
    return {"INGRESS_HOST": "127.0.0.1", "ROUTES": json.dumps(routes)}


def child_env(
    environ: Mapping[str, str],
    own: Mapping[str, str],
    overrides: Mapping[str, str],
    port: int,
    *,
    ingress: bool = False,
) -> dict[str, str]:
    """A child's environment: the caller's, then its part's own, then the stack's `env=`
    overrides, then its port."""
    env = {**environ, **own, **overrides, "PORT": str(port)}
    if ingress:
        env["INGRESS_PORT"] = str(port)
    return env

"""Every installed service, found through its declaration: each service package names its
`Service` under the entry-point group `ticketing.services`, so the dev runner and the deploy
checks learn the services, their routes and their databases without a list of their own."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points

from ticketing_common.service import Service

GROUP = "ticketing.services"


@dataclass(frozen=True)
class Installed:
    name: str
    module: str  # what `python -m` runs
    distribution: str  # the package that installs it
    route: str | None  # the path prefix the ingress sends it: its API, or "/" for the pages
    uses_mongo: bool
    uses_nats: bool


@cache
def installed_services() -> tuple[Installed, ...]:
    """The installed services, by name."""
    found = []
    for entry in entry_points(group=GROUP):
        service = entry.load()
        assert isinstance(service, Service), f"{entry.value} is not a Service"
        found.append(
            Installed(
                name=service.name,
                module=entry.module.rsplit(".", 1)[0],
                distribution=entry.dist.name if entry.dist else entry.module,
                route=service.api_prefix or ("/" if service.routers else None),
                uses_mongo=service.uses_mongo,
                uses_nats=service.uses_nats,
            )
        )
    return tuple(sorted(found, key=lambda s: s.name))

"""A service loads only the drivers its declaration uses: one without MongoDB never imports
PyMongo, one without NATS never imports nats-py, and with tracing off none imports the
OpenTelemetry SDK. Each is megabytes of memory in every process. No server: each service is
imported and its app built and wrapped as `serve_forever` serves it, in a fresh interpreter."""

import json
import os
import subprocess
import sys

import pytest

from ticketing_common.registry import GROUP, Installed, installed_services

# Import the declaration, build its app and wrap it as served; print which of the modules
# asked about were loaded by then.
PROBE = """
import json, sys
from importlib.metadata import entry_points
from ticketing_common import tracing
(entry,) = [e for e in entry_points(group=sys.argv[1]) if e.module.rsplit(".", 1)[0] == sys.argv[2]]
service = entry.load()
tracing.served(service.name, service.build(service.settings.model_construct()))
print(json.dumps([m for m in sys.argv[3:] if m in sys.modules]))
"""
# Import the modules named (comma-separated); print which of the others were loaded by then.
IMPORTS = """
import importlib, json, sys
for name in sys.argv[1].split(","):
    importlib.import_module(name)
print(json.dumps([m for m in sys.argv[2:] if m in sys.modules]))
"""


def unused_drivers(service: Installed) -> list[str]:
    """The modules `service` must not load, by what its declaration uses."""
    unused = ["opentelemetry.sdk"]
    if not service.uses_mongo:
        unused += ["pymongo", "bson"]
    if not service.uses_nats:
        unused += ["nats"]
    return unused


def loaded(code: str, *args: str) -> list[str]:
    """What `code` printed, run in a fresh interpreter with tracing off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "TRACES_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    found: list[str] = json.loads(done.stdout)
    return found


@pytest.mark.parametrize("service", installed_services(), ids=lambda s: s.name)
def test_a_service_loads_no_driver_it_does_not_use(service):
    assert loaded(PROBE, GROUP, service.module, *unused_drivers(service)) == []


# What `run_service` imports once it connects to each (its branches), and what that must not
# bring along: a service with MongoDB and no NATS, or the other way round.
@pytest.mark.parametrize(
    ("modules", "unused"),
    [
        ("ticketing_common.mongo,ticketing_common.outbox", ["nats", "opentelemetry.sdk"]),
        (
            "ticketing_common.bus,ticketing_common.listener",
            ["pymongo", "bson", "opentelemetry.sdk"],
        ),
    ],
)
def test_connecting_to_one_loads_not_the_other(modules, unused):
    assert loaded(IMPORTS, modules, *unused) == []


def test_every_kind_of_service_is_checked():
    """Some service lacks each driver, so the first test asks about each of them."""
    asked = {m for s in installed_services() for m in unused_drivers(s)}
    assert asked == {"opentelemetry.sdk", "pymongo", "bson", "nats"}

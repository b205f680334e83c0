"""No real secret in any deployment file: real keys and signing secrets come from the operator."""

from __future__ import annotations

import re
from pathlib import Path

from .deploy import (
    FAKE_SECRET,
    K8S,
    NATS_CONF,
    NGINX_CONF,
    REAL_SECRET,
    ROOT,
    STACK_FILE,
    STRIPE_TEST_FILE,
)

# An address with a password in it: nats://user:pass@host, mongodb://user:pass@host, ... (not a
# placeholder such as nats://<service>:<password>@nats:4222).
CREDENTIAL_URL = re.compile(r"\b[a-z][\w+.-]*://[^\s/:@\"']*:(?!<)[^\s/@\"']+@")


def deployment_files() -> list[Path]:
    return [
        STACK_FILE,
        STRIPE_TEST_FILE,
        NGINX_CONF,
        NATS_CONF,
        *sorted(p for p in K8S.rglob("*") if p.is_file()),
    ]


def test_no_secret_value_is_committed_in_the_deployment_files() -> None:
    """Real keys and signing secrets come from the operator; only dev's fakes are in git."""
    found = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in deployment_files()
        for match in REAL_SECRET.finditer(path.read_text())
        if FAKE_SECRET not in match.group(0)
    ]
    assert found == []
    assert REAL_SECRET.search("STRIPE_WEBHOOK_SECRET=whsec_5f2a"), "the pattern is live"


def test_no_datastore_password_is_committed_in_the_swarm_files() -> None:
    """The Swarm stack's datastore addresses with their passwords are secrets, never in git."""
    found = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in (STACK_FILE, STRIPE_TEST_FILE, NATS_CONF)
        for match in CREDENTIAL_URL.finditer(path.read_text())
    ]
    assert found == []
    assert not re.search(r"(?m)^\s*password:\s*[^$\s]", NATS_CONF.read_text()), "only $VARIABLES"
    for live in ("nats://tickets:s3cret@nats:4222", "mongodb://root:pw@auth-mongo:27017/auth"):
        assert CREDENTIAL_URL.search(live), "the pattern is live"

"""No real secret in any deployment file: real keys and signing secrets come from the operator."""

from __future__ import annotations

from .deploy import FAKE_SECRET, K8S, NGINX_CONF, REAL_SECRET, ROOT, STACK_FILE


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

"""Schemathesis against every operation of every API service's OpenAPI, through the ingress:
no 5xx, and every error answer in the SPEC's shape with a status from its table.

Seeded and deterministic, so a failure replays; each failure names the operation and shows the
request as a curl command and the response that came back.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import Case

from devstack.stack import Stack

from .fuzz import API_PREFIXES, FuzzUser, load, make_user, no_server_error, spec_error_body


@pytest.fixture(scope="session")
def fuzz_user(stack: Stack) -> FuzzUser:
    """One signed-in user for the whole fuzz run, so the fuzzer gets past the 401."""
    return make_user(stack.url)


@pytest.fixture(params=sorted(API_PREFIXES))
def api_schema(
    request: pytest.FixtureRequest, stack: Stack, fuzz_user: FuzzUser
) -> schemathesis.BaseSchema:
    """One service's schema; each test of `test_api` fuzzes one service."""
    name: str = request.param
    # Schemathesis 4.32's lazy loader renames the test through `_nodeid`, which pytest 9.2 no
    # longer has; give it one (the subtests still carry each operation's name).
    request.node._nodeid = request.node.nodeid
    return load(name, stack.service_urls[name], stack.url, fuzz_user)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_api(case: Case[Any]) -> None:
    """Only the SPEC's promises are checked: the OpenAPI documents 422s the services never send."""
    case.call_and_validate(checks=[no_server_error, spec_error_body])


def test_a_newline_in_a_path_is_a_spec_404(stack: Stack) -> None:
    """Found by the fuzzer: an id holding an encoded newline gets the SPEC's 404 through the
    ingress too (its catch-all route once stopped at the newline and answered in text)."""
    response = httpx.get(f"{stack.url}/api/tickets/%0A", timeout=30)
    assert response.status_code == 404
    assert response.json() == {"errors": [{"message": "Not Found"}]}

"""Helpers for the fuzz test: a signed-in user with real ids, the Schemathesis config, and the
check that every error answer has the SPEC's shape."""

from __future__ import annotations

import copy
import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import schemathesis
from schemathesis import Case, CheckContext, Response

from ticketing_common.registry import installed_services

# Each installed API service and the prefix it serves its routes (and its OpenAPI) under.
API_PREFIXES = {s.name: s.route for s in installed_services() if s.route and s.route != "/"}

# The statuses of the SPEC's error table (no 503: nothing is down while we fuzz), and the fixed
# message where the table gives one.
ERROR_STATUSES = {400, 401, 402, 404, 413, 429}
FIXED_MESSAGES = {
    401: "Not authorized",
    404: "Not Found",
    413: "Request body too large",
    429: "Too many requests",
}

# Fixed, so CI replays the same cases; set them to fuzz deeper or elsewhere by hand.
SEED = int(os.environ.get("FUZZ_SEED", "20261202"))
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))


# Cards the test Stripe server knows: two that pay and two that are declined.
CARDS = ["pm_card_visa", "tok_visa", "pm_card_chargeDeclined", "tok_chargeDeclined"]

# A route the OpenAPI hides (`include_in_schema=False`) but the ingress serves.
WEBHOOK = {
    "post": {
        "operationId": "stripe_webhook",
        "parameters": [
            {"name": "Stripe-Signature", "in": "header", "schema": {"type": "string"}},
        ],
        "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
        "responses": {"200": {"description": "received"}},
    }
}
HIDDEN = {"payments": {"/api/payments/webhook": WEBHOOK}}

# The SPEC's rules that the published OpenAPI leaves out (it requires nothing and bounds
# nothing), so valid cases get past validation and invalid ones hit its edges.
OBJECT_ID = {"type": "string", "pattern": "^[0-9a-f]{24}$"}
TITLE = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S"}
# Whole prices: float fuzzing gives more decimals than the two the SPEC allows.
PRICE = {"type": "integer", "minimum": 1, "maximum": 1_000_000}
PASSWORD = {"type": "string", "minLength": 4, "maxLength": 20, "pattern": "^\\S.*\\S$"}
EMAIL = {"type": "string", "format": "email"}
BODY_RULES: dict[str, dict[str, dict[str, Any]]] = {
    "SignUp": {"email": EMAIL, "password": PASSWORD},
    "SignIn": {"email": EMAIL, "password": PASSWORD},
    "NewTicket": {"title": TITLE, "price": PRICE},
    "TicketEdit": {"title": TITLE, "price": PRICE},
    "NewOrder": {"ticketId": OBJECT_ID},
    "NewPayment": {"token": {"type": "string", "minLength": 1}, "orderId": OBJECT_ID},
}
QUERY_RULES = {"limit": {"minimum": 1, "maximum": 100}, "offset": {"minimum": 0, "maximum": 10_000}}
# A header every service reads (the request id), so header values get fuzzed too.
REQUEST_ID = {"name": "X-Request-Id", "in": "header", "schema": {"type": "string"}}


@dataclass(frozen=True)
class FuzzUser:
    """A user of the fuzz test's own, with ids the fuzzer can mix into its requests."""

    session: str
    ticket_ids: list[str]  # free, reserved by `order_id`, reserved by `payable_id`, another's
    editable_id: str  # only ever edited, so some edits get through
    order_id: str  # for the orders routes, which may cancel it
    payable_id: str  # for payments only, so the fuzzer can pay it before anything cancels it


def sign_up(http: httpx.Client) -> str:
    """Sign a fresh user up (never an email another test uses) and keep its session cookie."""
    email = f"fuzz-{uuid.uuid4().hex[:10]}@test.dev"
    response = http.post("/api/users/signup", json={"email": email, "password": "password"})
    assert response.status_code == 201, response.text
    session = response.cookies["session"]
    http.cookies.set("session", session)
    return session


def sell(http: httpx.Client, title: str) -> str:
    """A new ticket's id."""
    response = http.post("/api/tickets", json={"title": title, "price": 12.5})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def order(http: httpx.Client, ticket_id: str, timeout: float = 20) -> str:
    """An order's id for the ticket, once the orders service has replicated the ticket."""
    deadline = time.monotonic() + timeout
    while True:
        response = http.post("/api/orders", json={"ticketId": ticket_id})
        if response.status_code != 404 or time.monotonic() > deadline:
            assert response.status_code == 201, response.text
            return str(response.json()["id"])
        time.sleep(0.2)


def make_user(base_url: str) -> FuzzUser:
    """A signed-in user with tickets and orders of its own, and someone else's ticket."""
    with httpx.Client(base_url=base_url, timeout=30) as other:
        sign_up(other)
        others = sell(other, "fuzz other")
    with httpx.Client(base_url=base_url, timeout=30) as http:
        session = sign_up(http)
        free, held, paid, editable = (
            sell(http, f"fuzz {n}") for n in ("free", "held", "paid", "edit")
        )
        order_id, payable_id = order(http, held), order(http, paid)
    return FuzzUser(session, [free, held, paid, others], editable, order_id, payable_id)


def config(base_url: str, user: FuzzUser) -> schemathesis.Config:
    """Seeded, bounded generation through the ingress as `user`; real ids and cards half the
    time, so the fuzzer reaches past the 404s and the validation."""
    bindings = {
        "path.ticket_id": "editable",
        "body.ticketId": "tickets",
        "path.order_id": "orders",
        "body.orderId": "payable",
        "body.token": "cards",
    }
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "suppress-health-check": ["all"],
            "base-url": base_url,
            "headers": {"Cookie": f"session={user.session}"},
            "request-timeout": 15,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
                "mode": "all",
            },
            "phases": {"stateful": {"enabled": False}},
            "dictionaries": {
                "tickets": {"values": user.ticket_ids},
                "editable": {"values": [*user.ticket_ids, user.editable_id]},
                "orders": {"values": [user.order_id]},
                "payable": {"values": [user.payable_id]},
                "cards": {"values": CARDS},
            },
            "parameters": {
                name: {"dictionary": dictionary, "probability": 0.5}
                for name, dictionary in bindings.items()
            },
        }
    )


def load(service: str, service_url: str, base_url: str, user: FuzzUser) -> schemathesis.BaseSchema:
    """The service's OpenAPI, from its own port, plus the routes it hides; requests go to
    `base_url` (the ingress)."""
    response = httpx.get(f"{service_url}{API_PREFIXES[service]}/openapi.json", timeout=30)
    response.raise_for_status()
    document = response.json()
    document["paths"].update(copy.deepcopy(HIDDEN.get(service, {})))
    with_spec_rules(document)
    return schemathesis.openapi.from_dict(document, config=config(base_url, user))


def with_spec_rules(document: dict[str, Any]) -> None:
    """Write the SPEC's body and query rules, and the request id header, into a document."""
    for name, fields in BODY_RULES.items():
        component = document.get("components", {}).get("schemas", {}).get(name)
        if component is not None:
            component["properties"] = fields
            component["required"] = sorted(fields)
    for operations in document["paths"].values():
        for operation in operations.values():
            operation.setdefault("parameters", []).append(dict(REQUEST_ID))
            for parameter in operation["parameters"]:
                if parameter["in"] == "query":
                    parameter["schema"].update(QUERY_RULES.get(parameter["name"], {}))


def body_of(response: Response) -> Any:
    """The JSON body, or an assertion naming what came back instead."""
    try:
        return json.loads(response.content)
    except ValueError:
        raise AssertionError(
            f"{response.status_code} body is not JSON: {response.text!r}"
        ) from None


def error_shape_problems(status: int, body: Any) -> list[str]:
    """What is wrong with an error body, by the SPEC: `{"errors": [{"message", "field"?}]}`."""
    if not isinstance(body, dict) or set(body) != {"errors"}:
        return ['body is not an object with only "errors"']
    errors = body["errors"]
    if not isinstance(errors, list) or not errors:
        return ['"errors" is not a non-empty list']
    problems = []
    for i, item in enumerate(errors):
        if not isinstance(item, dict) or not set(item) <= {"message", "field"}:
            problems.append(f'errors[{i}] has keys other than "message" and "field"')
        elif not isinstance(item.get("message"), str) or not item["message"]:
            problems.append(f"errors[{i}].message is not a non-empty string")
        elif "field" in item and not isinstance(item["field"], str):
            problems.append(f"errors[{i}].field is not a string")
    fixed = FIXED_MESSAGES.get(status)
    if fixed and not problems and [e["message"] for e in errors] != [fixed]:
        problems.append(f"a {status} must say {fixed!r}")
    return problems


def no_server_error(ctx: CheckContext, response: Response, case: Case[Any]) -> None:
    """No 5xx: nothing the fuzzer sends may break a service (and no dependency is down)."""
    assert response.status_code < 500, f"server error {response.status_code}: {response.text!r}"


def spec_error_body(ctx: CheckContext, response: Response, case: Case[Any]) -> None:
    """Every 4xx is a status of the SPEC's table with a body in its shape."""
    status = response.status_code
    if status < 400:
        return
    assert status in ERROR_STATUSES, (
        f"status {status} is not in the SPEC's table: {response.text!r}"
    )
    problems = error_shape_problems(status, body_of(response))
    assert not problems, (
        f"{status} body off the SPEC shape ({'; '.join(problems)}): {response.text!r}"
    )
    if status == 429:
        assert "retry-after" in response.headers, "a 429 without Retry-After"  # names lower-cased

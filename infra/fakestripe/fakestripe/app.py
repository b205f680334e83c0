"""The HTTP app: Stripe's wire format (form bodies in, JSON out) over an in-memory state."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

Json = dict[str, Any]
Pairs = list[tuple[str, str]]
Action = Callable[[Json], Json]

DEFAULT_STRIPE_VERSION = "2026-10-28.endive"
MIN_AMOUNTS = {"usd": ("$", 50), "eur": ("€", 50), "gbp": ("£", 30)}
DECLINED = ("generic_decline", "Your card was declined.")
NO_FUNDS = ("insufficient_funds", "Your card has insufficient funds.")
# Stripe's test payment methods and card tokens: None charges, else (decline_code, message).
CARDS: dict[str, tuple[str, str] | None] = {
    "pm_card_visa": None,
    "tok_visa": None,
    "pm_card_mastercard": None,
    "tok_mastercard": None,
    "pm_card_chargeDeclined": DECLINED,
    "tok_chargeDeclined": DECLINED,
    "pm_card_chargeDeclinedInsufficientFunds": NO_FUNDS,
    "tok_chargeDeclinedInsufficientFunds": NO_FUNDS,
}


class StripeError(Exception):
    """An API error in Stripe's `{"error": {...}}` shape.

    `stored` says whether an idempotency key keeps it: Stripe replays the outcome of a request
    that ran (a decline) but not a parameter validation failure, which may be retried fixed.
    """

    def __init__(self, status: int, error: Json, stored: bool = False) -> None:
        super().__init__(error["message"])
        self.status, self.error, self.stored = status, error, stored


def invalid(message: str, code: str | None = None, param: str | None = None) -> StripeError:
    """A 400 invalid_request_error (404 for an unknown id in the URL is built by the caller)."""
    error = {"type": "invalid_request_error", "message": message, "code": code, "param": param}
    return StripeError(400, {k: v for k, v in error.items() if v is not None})


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def parse_form(pairs: Pairs) -> Json:
    """Nest Stripe's bracket keys: `metadata[orderId]=o1` -> `{"metadata": {"orderId": "o1"}}`."""
    params: Json = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        *parents, leaf = [head, *(part.rstrip("]") for part in rest.split("[") if rest)]
        node = params
        for part in parents:
            child = node.setdefault(part, {})
            node = child if isinstance(child, dict) else {}
        node[leaf] = value
    return params


@dataclass
class State:
    """Everything the server remembers, for the process lifetime (enough for test mode)."""

    intents: dict[str, Json] = field(default_factory=dict)
    # (api key, idempotency key) -> (route and sorted parameters, status, body)
    replies: dict[tuple[str, str], tuple[tuple[str, Pairs], int, Json]] = field(
        default_factory=dict
    )
    locks: defaultdict[tuple[str, str], asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )

    def create_intent(self, params: Json) -> Json:
        """Validate like Stripe, store the PaymentIntent, and with `confirm=true` charge it."""
        raw, currency = params.get("amount"), str(params.get("currency", "")).lower()
        for name, value in (("amount", raw), ("currency", currency)):
            if not value:
                raise invalid(f"Missing required param: {name}.", "parameter_missing", name)
        if not str(raw).isdigit():
            raise invalid(f"Invalid integer: {raw}", "parameter_invalid_integer", "amount")
        amount, (symbol, minimum) = int(str(raw)), MIN_AMOUNTS.get(currency, ("", 1))
        if amount < minimum:
            message = f"Amount must be at least {symbol}{minimum / 100:.2f} {currency}"
            raise invalid(message, "amount_too_small", "amount")
        method = params.get("payment_method")
        if method is not None and method not in CARDS:
            raise invalid(
                f"No such PaymentMethod: '{method}'", "resource_missing", "payment_method"
            )
        auto = params.get("automatic_payment_methods")
        if isinstance(auto, dict):
            auto = {"allow_redirects": "always", **auto, "enabled": auto.get("enabled") == "true"}
        pi_id = new_id("pi")
        intent = self.intents[pi_id] = {
            "id": pi_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "amount_refunded": 0,
            "currency": currency,
            "status": "requires_confirmation" if method else "requires_payment_method",
            "payment_method": method,
            "latest_charge": None,
            "last_payment_error": None,
            "automatic_payment_methods": auto,
            "metadata": params.get("metadata") or {},
            "description": params.get("description"),
            "client_secret": f"{pi_id}_secret_{secrets.token_hex(12)}",
            "created": int(time.time()),
            "livemode": False,
        }
        if params.get("confirm") == "true":
            if method is None:
                message = "You cannot confirm this PaymentIntent: it has no payment method."
                raise invalid(message, "payment_intent_unexpected_state", "payment_method")
            self.charge(intent)
        return intent

    def charge(self, intent: Json) -> None:
        """The test card decides: success, or a 402 card_error that carries the PaymentIntent."""
        intent["latest_charge"] = charge = new_id("ch")
        method, decline = intent["payment_method"], CARDS[intent["payment_method"]]
        if decline is None:
            intent.update(status="succeeded", amount_received=intent["amount"])
            return
        error = {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": decline[0],
            "message": decline[1],
            "charge": charge,
            "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "payment_method": {"id": method, "object": "payment_method", "type": "card"},
        }
        intent.update(status="requires_payment_method", payment_method=None)
        intent["last_payment_error"] = dict(error)
        raise StripeError(402, {**error, "payment_intent": dict(intent)}, stored=True)

    def retrieve(self, pi_id: str) -> Json:
        if pi_id not in self.intents:
            message = f"No such payment_intent: '{pi_id}'"
            error = {"type": "invalid_request_error", "code": "resource_missing", "param": "intent"}
            raise StripeError(404, {**error, "message": message})
        return self.intents[pi_id]

    def refund(self, params: Json) -> Json:
        """Refund what is left of a succeeded PaymentIntent, or `amount` of it."""
        pi_id = params.get("payment_intent") or ""
        if pi_id not in self.intents:
            raise invalid(
                f"No such payment_intent: '{pi_id}'", "resource_missing", "payment_intent"
            )
        intent = self.intents[pi_id]
        left = intent["amount_received"] - intent["amount_refunded"]
        if intent["status"] != "succeeded":
            message = f"This PaymentIntent ({pi_id}) does not have a successful charge to refund."
            raise invalid(message, "charge_not_refundable")
        if left <= 0:
            message = f"Charge {intent['latest_charge']} has already been refunded."
            raise invalid(message, "charge_already_refunded")
        raw = str(params.get("amount", left))
        if not raw.isdigit():
            raise invalid(f"Invalid integer: {raw}", "parameter_invalid_integer", "amount")
        if not 0 < (amount := int(raw)) <= left:
            message = f"Refund amount ({amount}) is greater than unrefunded amount ({left})"
            raise invalid(message, "amount_too_large", "amount")
        intent["amount_refunded"] += amount
        return {
            "id": new_id("re"),
            "object": "refund",
            "amount": amount,
            "currency": intent["currency"],
            "status": "succeeded",
            "payment_intent": pi_id,
            "charge": intent["latest_charge"],
            "metadata": params.get("metadata") or {},
            "created": int(time.time()),
        }


def api_key(request: Request) -> str:
    """The caller's secret key; any `sk_test_` key is an account, anything else a 401."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        message = (
            "You did not provide an API key. You need to provide your API key in the Authorization "
            "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
        )
        raise StripeError(401, {"type": "invalid_request_error", "message": message})
    if not key.startswith("sk_test_"):
        masked = key[:8] + "*" * (len(key) - 12) + key[-4:] if len(key) > 12 else key
        message = f"Invalid API Key provided: {masked}"
        raise StripeError(401, {"type": "invalid_request_error", "message": message})
    return key


def create_app() -> FastAPI:
    """A fresh server with its own empty state (so each test can have its own)."""
    app = FastAPI(title="fakestripe", docs_url=None, redoc_url=None, openapi_url=None)
    state = app.state.stripe = State()

    async def handle(request: Request, action: Action) -> Response:
        """Authenticate, parse, replay or run `action`, and answer with Stripe's headers."""
        request_id = new_id("req")
        version = request.headers.get("stripe-version", DEFAULT_STRIPE_VERSION)
        headers = {"Request-Id": request_id, "Stripe-Version": version}
        pairs = parse_qsl(request.url.query, keep_blank_values=True)
        pairs += parse_qsl((await request.body()).decode(), keep_blank_values=True)
        idem_key = request.headers.get("idempotency-key") if request.method == "POST" else None
        try:
            key = api_key(request)
            if idem_key is None:
                status, body = run(action, pairs)
            else:
                headers["Idempotency-Key"] = idem_key
                route = f"{request.method} {request.url.path}"
                status, body, replayed = await idempotent((key, idem_key), route, pairs, action)
                if replayed:
                    headers["Idempotent-Replayed"] = "true"
        except StripeError as exc:
            status, body = exc.status, {"error": exc.error}
        if "error" in body:
            log_url = f"https://dashboard.stripe.com/test/logs/{request_id}"
            body = {"error": {**body["error"], "request_log_url": log_url}}
            headers["Stripe-Should-Retry"] = "false"
        return JSONResponse(body, status, headers)

    def run(action: Action, pairs: Pairs) -> tuple[int, Json]:
        """Run `action`; a stored error (a decline) becomes an outcome, others propagate."""
        try:
            return 200, action(parse_form(pairs))
        except StripeError as exc:
            if not exc.stored:
                raise
            return exc.status, {"error": exc.error}

    async def idempotent(
        slot: tuple[str, str], route: str, pairs: Pairs, action: Action
    ) -> tuple[int, Json, bool]:
        """Run once per key; the lock makes a concurrent twin wait, then get the replay."""
        if len(slot[1]) > 255:
            raise invalid("Idempotency keys can be no longer than 255 characters.")
        async with state.locks[slot]:
            if slot in state.replies:
                request, status, body = state.replies[slot]
                if request != (route, sorted(pairs)):
                    message = (
                        "Keys for idempotent requests can only be used with the same parameters "
                        f"they were first used with. Try using a key other than '{slot[1]}' if "
                        "you meant to execute a different request."
                    )
                    raise StripeError(400, {"type": "idempotency_error", "message": message})
                return status, body, True
            status, body = run(action, pairs)
            state.replies[slot] = ((route, sorted(pairs)), status, body)
            return status, body, False

    @app.post("/v1/payment_intents")
    async def create_intent(request: Request) -> Response:
        return await handle(request, state.create_intent)

    @app.get("/v1/payment_intents/{pi_id}")
    async def retrieve_intent(request: Request, pi_id: str) -> Response:
        return await handle(request, lambda _params: state.retrieve(pi_id))

    @app.post("/v1/refunds")
    async def create_refund(request: Request) -> Response:
        return await handle(request, state.refund)

    @app.get("/_test/payment_intents")
    async def list_intents() -> Json:
        """Test-only and unauthenticated: every PaymentIntent so far, oldest first."""
        return {"object": "list", "data": list(state.intents.values())}

    @app.get("/healthz")
    async def healthz() -> Json:
        return {"status": "ok"}

    @app.exception_handler(HTTPException)
    async def unknown_route(request: Request, exc: HTTPException) -> Response:
        """Stripe's answer to a URL it does not serve, rather than FastAPI's `{"detail": ...}`."""
        message = f"Unrecognized request URL ({request.method}: {request.url.path})."
        error = {"type": "invalid_request_error", "message": message}
        return JSONResponse({"error": error}, 404)

    return app

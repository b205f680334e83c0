"""The HTTP app: Stripe's wire format (form bodies in, JSON out) over an in-memory state."""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from fakestripe.faults import Faults, Rule
from fakestripe.webhooks import Config, Webhooks, encode, sign

Json = dict[str, Any]
Pairs = list[tuple[str, str]]
Action = Callable[[Json], Json]
B = TypeVar("B", bound=BaseModel)

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
    refunds: list[Json] = field(default_factory=list)
    events: list[Json] = field(default_factory=list)  # every Event object, oldest first
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
            self.emit("payment_intent.succeeded", intent)
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
        self.emit("payment_intent.payment_failed", intent)
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
        refund = {
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
        self.refunds.append(refund)
        self.emit("charge.refunded", charge_of(intent))
        return refund

    def emit(self, kind: str, obj: Json) -> Json:
        """Record an Event with a snapshot of `obj`; the handler delivers it after answering."""
        event = {
            "id": new_id("evt"),
            "object": "event",
            "api_version": DEFAULT_STRIPE_VERSION,
            "created": int(time.time()),
            "data": {"object": copy.deepcopy(obj)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
        }
        self.events.append(event)
        return event

    def event(self, evt_id: str) -> Json:
        for event in self.events:
            if event["id"] == evt_id:
                return event
        raise StripeError(
            404, {"type": "invalid_request_error", "message": f"No such event: '{evt_id}'"}
        )


def charge_of(intent: Json) -> Json:
    """The Charge behind a PaymentIntent, as `charge.refunded` carries it."""
    return {
        "id": intent["latest_charge"],
        "object": "charge",
        "amount": intent["amount"],
        "amount_captured": intent["amount_received"],
        "amount_refunded": intent["amount_refunded"],
        "captured": True,
        "currency": intent["currency"],
        "paid": True,
        "payment_intent": intent["id"],
        "payment_method": intent["payment_method"],
        # As on Stripe: true once the whole charge is refunded.
        "refunded": intent["amount_refunded"] >= intent["amount_received"],
        "status": "succeeded",
        "metadata": copy.deepcopy(intent["metadata"]),
        "created": intent["created"],
        "livemode": False,
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


def injected_error(status: int) -> Json:
    """Stripe's body for a failure on its side: api_error, or its rate limit for a 429."""
    if status == 429:
        message = (
            "Request rate limit exceeded. Learn more about rate limits here: "
            "https://stripe.com/docs/rate-limits."
        )
        return {"type": "invalid_request_error", "code": "rate_limit", "message": message}
    return {"type": "api_error", "message": "An unknown error occurred"}


class ControlBody(BaseModel):
    """A `/_test` request body: JSON, every field known."""

    model_config = ConfigDict(extra="forbid")


class Endpoint(ControlBody):
    url: str | None = None
    secret: str | None = Field(default=None, min_length=1)
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    retry_seconds: float | None = Field(default=None, ge=0, le=3600)


class EventRef(ControlBody):
    id: str | None = None


class SignRequest(ControlBody):
    id: str
    timestamp: int | None = None
    secret: str | None = Field(default=None, min_length=1)


class Release(ControlBody):
    count: int | None = Field(default=None, ge=1)


async def control_body(request: Request, model: type[B]) -> B:
    """Parse a `/_test` body (empty means `{}`); a bad one is a 400 in Stripe's shape."""
    raw = await request.body()
    try:
        return model.model_validate(json.loads(raw or b"{}"))
    except (ValueError, ValidationError) as exc:
        raise invalid(f"Invalid body: {exc}") from None


def create_app(webhooks: Config | None = None) -> FastAPI:
    """A fresh server with its own empty state (so each test can have its own); webhooks as
    `webhooks` says, by default as the environment does (see `Config`)."""
    hooks = Webhooks(webhooks or Config.from_env())
    faults = Faults()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        faults.clear()
        await hooks.close()

    app = FastAPI(
        title="fakestripe", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    state = app.state.stripe = State()
    app.state.webhooks, app.state.faults = hooks, faults

    async def handle(request: Request, action: Action) -> Response:
        """Apply the fault set for this request, if any, around the real work; the events the
        work caused go out after the answer, as Stripe's do."""
        request_id = new_id("req")
        version = request.headers.get("stripe-version", DEFAULT_STRIPE_VERSION)
        headers = {"Request-Id": request_id, "Stripe-Version": version}
        route = f"{request.method} {request.url.path}"
        rule = faults.take(request.method, request.url.path)
        if rule is not None:
            await faults.pause(rule, route, "request")
            if failure := rule.failure("request"):
                return reply(failure, {"error": injected_error(failure)}, headers)
        status, body, events = await process(request, action, headers)
        if "error" in body:
            headers["Stripe-Should-Retry"] = "false"
        if rule is not None:
            await faults.pause(rule, route, "answer")
            if failure := rule.failure("answer"):
                # The work is done (and kept under its idempotency key); the client sees it fail.
                status, body = failure, {"error": injected_error(failure)}
                headers.pop("Stripe-Should-Retry", None)
        for event in events:
            event["request"] = {"id": request_id, "idempotency_key": headers.get("Idempotency-Key")}
        response = reply(status, body, headers)
        if events:
            response.background = BackgroundTask(hooks.send, events)
        return response

    def reply(status: int, body: Json, headers: dict[str, str]) -> Response:
        if "error" in body:
            log_url = f"https://dashboard.stripe.com/test/logs/{headers['Request-Id']}"
            body = {"error": {**body["error"], "request_log_url": log_url}}
        return JSONResponse(body, status, headers)

    async def process(
        request: Request, action: Action, headers: dict[str, str]
    ) -> tuple[int, Json, list[Json]]:
        """Authenticate, parse, and replay or run `action`: (status, body, new events)."""
        pairs = parse_qsl(request.url.query, keep_blank_values=True)
        pairs += parse_qsl((await request.body()).decode(), keep_blank_values=True)
        idem_key = request.headers.get("idempotency-key") if request.method == "POST" else None
        try:
            key = api_key(request)
            if idem_key is None:
                return run(action, pairs)
            headers["Idempotency-Key"] = idem_key
            route = f"{request.method} {request.url.path}"
            status, body, events, replayed = await idempotent((key, idem_key), route, pairs, action)
            if replayed:
                headers["Idempotent-Replayed"] = "true"
            return status, body, events
        except StripeError as exc:
            return exc.status, {"error": exc.error}, []

    def run(action: Action, pairs: Pairs) -> tuple[int, Json, list[Json]]:
        """Run `action`; a stored error (a decline) becomes an outcome, others propagate.
        Also returns the events it emitted (it runs without awaiting, so they are its own)."""
        before = len(state.events)
        try:
            return 200, action(parse_form(pairs)), state.events[before:]
        except StripeError as exc:
            if not exc.stored:
                raise
            return exc.status, {"error": exc.error}, state.events[before:]

    async def idempotent(
        slot: tuple[str, str], route: str, pairs: Pairs, action: Action
    ) -> tuple[int, Json, list[Json], bool]:
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
                return status, body, [], True
            status, body, events = run(action, pairs)
            state.replies[slot] = ((route, sorted(pairs)), status, body)
            return status, body, events, False

    @app.post("/v1/payment_intents")
    async def create_intent(request: Request) -> Response:
        return await handle(request, state.create_intent)

    @app.get("/v1/payment_intents/{pi_id}")
    async def retrieve_intent(request: Request, pi_id: str) -> Response:
        return await handle(request, lambda _params: state.retrieve(pi_id))

    @app.post("/v1/refunds")
    async def create_refund(request: Request) -> Response:
        return await handle(request, state.refund)

    # -- test-only and unauthenticated: what happened, and faults to inject ---------------------

    @app.get("/_test/payment_intents")
    async def list_intents() -> Json:
        """Every PaymentIntent so far, oldest first (status, amount_refunded, metadata...)."""
        return {"object": "list", "data": list(state.intents.values())}

    @app.get("/_test/refunds")
    async def list_refunds() -> Json:
        return {"object": "list", "data": state.refunds}

    @app.get("/_test/events")
    async def list_events(type: str | None = None) -> Json:
        """Every Event so far (of one type, if asked), oldest first."""
        return {"object": "list", "data": [e for e in state.events if type in (None, e["type"])]}

    @app.get("/_test/webhooks")
    async def webhooks_view() -> Json:
        """Where events go, how many are still being delivered, and every attempt so far."""
        config = hooks.config
        return {
            "url": config.url,
            "secret": config.secret,
            "max_attempts": config.max_attempts,
            "retry_seconds": config.retry_seconds,
            "pending": hooks.pending,
            "deliveries": list(hooks.deliveries),
        }

    @app.post("/_test/webhooks")
    async def webhooks_configure(request: Request) -> Json:
        """Point deliveries elsewhere (an empty url stops them) or change how they are made."""
        changes = (await control_body(request, Endpoint)).model_dump(exclude_none=True)
        for name, value in changes.items():
            setattr(hooks.config, name, value.strip() if name == "url" else value)
        return await webhooks_view()

    @app.post("/_test/webhooks/redeliver")
    async def redeliver(request: Request) -> Json:
        """Send every event so far again (or the one named by `id`), once each, in order, and
        answer when the endpoint has: as Stripe sending an event more than once."""
        wanted = (await control_body(request, EventRef)).id
        if not hooks.config.url:
            raise invalid("No webhook endpoint: set WEBHOOK_URL or POST /_test/webhooks.")
        events = [state.event(wanted)] if wanted else list(state.events)
        return {"object": "list", "data": [await hooks.attempt(event) for event in events]}

    @app.post("/_test/webhooks/sign")
    async def sign_event(request: Request) -> Json:
        """An event's exact body and `Stripe-Signature`, for a test to post itself (to an app
        served in-process, say); `timestamp` and `secret` make stale or foreign signatures."""
        ask = await control_body(request, SignRequest)
        payload = encode(state.event(ask.id))
        return {
            "payload": payload,
            "signature": sign(payload, ask.secret or hooks.config.secret, ask.timestamp),
        }

    @app.get("/_test/faults")
    async def faults_view() -> Json:
        """The rules in force and the requests held now (`held`: a test waits for it)."""
        return faults.view()

    @app.post("/_test/faults")
    async def faults_add(request: Request) -> Json:
        return faults.add(await control_body(request, Rule)).view()

    @app.post("/_test/faults/release")
    async def faults_release(request: Request) -> Json:
        """Let held requests go on (the oldest `count`, by default all); rules stay in force."""
        count = (await control_body(request, Release)).count
        return {"released": faults.release(count), **faults.view()}

    @app.delete("/_test/faults")
    async def faults_clear() -> Json:
        """Drop every rule and release every held request."""
        faults.clear()
        return faults.view()

    @app.get("/healthz")
    async def healthz() -> Json:
        return {"status": "ok"}

    @app.exception_handler(StripeError)
    async def stripe_error(request: Request, exc: StripeError) -> Response:
        return JSONResponse({"error": exc.error}, exc.status)

    @app.exception_handler(HTTPException)
    async def unknown_route(request: Request, exc: HTTPException) -> Response:
        """Stripe's answer to a URL it does not serve, rather than FastAPI's `{"detail": ...}`."""
        message = f"Unrecognized request URL ({request.method}: {request.url.path})."
        error = {"type": "invalid_request_error", "message": message}
        return JSONResponse({"error": error}, 404)

    return app

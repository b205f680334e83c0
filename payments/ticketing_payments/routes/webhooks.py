"""`/api/payments/webhook`: Stripe's events, signed, each applied once."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import stripe
from fastapi import APIRouter, Request

from ticketing_common.errors import BadRequestError
from ticketing_payments.routes.payments import SettingsDep, SettlementDep
from ticketing_payments.schemas import Received

log = logging.getLogger("ticketing.payments.webhooks")

router = APIRouter(tags=["payments"])

# How old a signature may be (Stripe's default): a replayed old delivery is refused.
TOLERANCE_SECONDS = 300
INVALID_SIGNATURE = "Invalid signature"


def verified_event(payload: bytes, header: str | None, secret: str | None) -> dict[str, Any]:
    """The event, once its `Stripe-Signature` proves Stripe sent these very bytes lately."""
    if not secret or not header:
        raise BadRequestError(INVALID_SIGNATURE)
    try:
        text = payload.decode()
        stripe.WebhookSignature.verify_header(text, header, secret, TOLERANCE_SECONDS)
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError):
        raise BadRequestError(INVALID_SIGNATURE) from None
    try:
        event = json.loads(text)
    except ValueError:
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        raise BadRequestError("Invalid payload")
    return event


@router.post("/webhook", include_in_schema=False)
async def stripe_webhook(
    request: Request, settlement: SettlementDep, settings: SettingsDep
) -> Received:
    event = verified_event(
        await request.body(),
        request.headers.get("stripe-signature"),
        settings.stripe_webhook_secret,
    )
    kind = str(event.get("type") or "")
    appliers: dict[str, Callable[[Mapping[str, Any]], Awaitable[bool]]] = {
        "payment_intent.succeeded": settlement.intent_succeeded,
        "payment_intent.payment_failed": settlement.intent_failed,
        "charge.refunded": settlement.charge_refunded,
    }
    apply = appliers.get(kind)
    if apply is None:
        return Received(received=True)  # not an event this service acts on
    handled = settlement.webhook_events
    if not await handled.first_time(event["id"], kind):
        return Received(received=True)
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    try:
        await apply(obj if isinstance(obj, dict) else {})
    except Exception:
        # Not applied: Stripe delivers it again (it retries what is not answered 2xx).
        await handled.forget(event["id"])
        raise
    return Received(received=True)

"""Charging through Stripe: one PaymentIntent, created and confirmed in one idempotent call."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import stripe

from ticketing_common.errors import (
    BadRequestError,
    PaymentDeclinedError,
    ServiceUnavailableError,
)
from ticketing_payments.settings import Settings

log = logging.getLogger("ticketing.payments.stripe")

# Stripe's parameters that carry the customer's card: an error about them is the token's fault.
CARD_PARAMS = {"payment_method", "source", "token"}


@dataclass(frozen=True)
class Charge:
    stripe_id: str
    amount: int
    currency: str


def attempt_key(order_id: str, token: str) -> str:
    """Names one attempt: a repeat (retry, double click) replays it; a new card is a new one."""
    return f"{order_id}:{token}"


def _message(exc: stripe.StripeError, default: str) -> str:
    message = exc.user_message
    return str(message) if message else default


class StripeGateway:
    """The official SDK over httpx (async); `stripe_api_base` points it at a test-mode server."""

    def __init__(self, settings: Settings) -> None:
        self._http = stripe.HTTPXClient(timeout=settings.stripe_timeout_seconds)
        api_base = settings.stripe_api_base or None
        self.client = (
            stripe.StripeClient(
                settings.stripe_key, base_addresses={"api": api_base}, http_client=self._http
            )
            if api_base
            else stripe.StripeClient(settings.stripe_key, http_client=self._http)
        )

    async def charge(self, *, order_id: str, amount: int, currency: str, token: str) -> Charge:
        """Charge `amount` now, or raise the API error the customer should see."""
        try:
            intent = await self.client.v1.payment_intents.create_async(
                params={
                    "amount": amount,
                    "currency": currency,
                    "payment_method": token,
                    "confirm": True,
                    "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
                    "metadata": {"orderId": order_id},
                },
                options={"idempotency_key": attempt_key(order_id, token)},
            )
        except stripe.CardError as exc:
            raise PaymentDeclinedError(_message(exc, "Your card was declined.")) from None
        except stripe.InvalidRequestError as exc:
            if exc.param in CARD_PARAMS:
                raise BadRequestError(_message(exc, "Invalid value"), field="token") from None
            if exc.param == "amount":
                # e.g. below Stripe's minimum charge ($0.50), which ticket prices may be.
                raise BadRequestError(_message(exc, "Invalid amount")) from None
            raise  # our request is wrong: a 500, logged
        except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as exc:
            log.warning("stripe unavailable: %r", exc)
            raise ServiceUnavailableError() from None
        if intent.status != "succeeded":
            # e.g. `requires_action` (3-D Secure), which a server-side confirmation cannot pass.
            log.info("payment intent %s ended %s", intent.id, intent.status)
            raise PaymentDeclinedError("Your card could not be charged. Try another card.")
        return Charge(intent.id, amount, currency)

    async def refund(self, stripe_id: str) -> None:
        """Give back a charge that lost the race to pay an order; a failure is only logged."""
        try:
            await self.client.v1.refunds.create_async(
                params={"payment_intent": stripe_id},
                options={"idempotency_key": f"refund:{stripe_id}"},
            )
        except stripe.StripeError as exc:
            log.error("refund of %s failed, refund it by hand: %r", stripe_id, exc)
        else:
            log.warning("refunded %s: the order had been paid by another attempt", stripe_id)

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

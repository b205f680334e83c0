"""Stripe: one PaymentIntent per attempt, created and confirmed in one idempotent call, and
refunds. Every call names what it does with an idempotency key, so repeating it (a retried
request, the reconciler) returns what the first one did instead of charging again."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import stripe

from ticketing_common.errors import BadRequestError, DomainError, PaymentDeclinedError
from ticketing_payments.settings import Settings

log = logging.getLogger("ticketing.payments.stripe")

# Stripe's parameters that carry the customer's card: an error about them is the token's fault.
CARD_PARAMS = {"payment_method", "source", "token"}
# Stripe's answers that mean "there is nothing (left) to refund": the refund is done.
ALREADY_REFUNDED = {"charge_already_refunded"}


class Refused(Exception):
    """Stripe answered and this attempt can never charge: it failed, with `error` to show."""

    def __init__(self, error: DomainError, stripe_id: str | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.stripe_id = stripe_id


class Unavailable(Exception):
    """No answer from Stripe: whether it charged (or refunded) is unknown. Asking again with
    the same idempotency key finds out."""


@dataclass(frozen=True)
class Charge:
    stripe_id: str


def refund_key(stripe_id: str) -> str:
    return f"refund:{stripe_id}"


def _message(exc: stripe.StripeError, default: str) -> str:
    message = exc.user_message
    return str(message) if message else default


def _intent_id(exc: stripe.StripeError) -> str | None:
    """The PaymentIntent a declined confirmation left behind, when Stripe names it."""
    intent = getattr(exc.error, "payment_intent", None) if exc.error else None
    value = getattr(intent, "id", None)
    return str(value) if value else None


class StripeGateway:
    """The official SDK over httpx (async); `stripe_api_base` points it at a test-mode server.

    The client is opened with the app and closed with it (`open`, `close`). The SDK does not
    retry here (`max_network_retries` stays 0): an unanswered call leaves its attempt pending,
    and the reconciler repeats it with the same key.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._http: stripe.HTTPXClient | None = None
        self._client: stripe.StripeClient | None = None

    def open(self) -> None:
        settings = self.settings
        self._http = stripe.HTTPXClient(timeout=settings.stripe_timeout_seconds)
        api_base = settings.stripe_api_base or None
        self._client = (
            stripe.StripeClient(
                settings.stripe_key, base_addresses={"api": api_base}, http_client=self._http
            )
            if api_base
            else stripe.StripeClient(settings.stripe_key, http_client=self._http)
        )

    @property
    def client(self) -> stripe.StripeClient:
        assert self._client is not None, "the Stripe gateway is not open"
        return self._client

    async def charge(
        self, *, order_id: str, amount: int, currency: str, token: str, key: str
    ) -> Charge:
        """Charge `amount` now under idempotency key `key`; raise Refused (a final answer) or
        Unavailable (no answer). Any other error is ours (a bad key, say): it propagates."""
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
                options={"idempotency_key": key},
            )
        except stripe.CardError as exc:
            declined = PaymentDeclinedError(_message(exc, "Your card was declined."))
            raise Refused(declined, _intent_id(exc)) from None
        except stripe.InvalidRequestError as exc:
            if exc.param in CARD_PARAMS:
                error = BadRequestError(_message(exc, "Invalid value"), field="token")
                raise Refused(error) from None
            if exc.param == "amount":
                # e.g. below Stripe's minimum charge ($0.50), which ticket prices may be.
                raise Refused(BadRequestError(_message(exc, "Invalid amount"))) from None
            raise  # our request is wrong: a 500, logged
        except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as exc:
            log.warning("stripe unavailable while charging %s: %r", key, exc)
            raise Unavailable() from None
        status = getattr(intent, "status", None)
        if status != "succeeded":
            # e.g. `requires_action` (3-D Secure), which a server-side confirmation cannot pass.
            log.info("payment intent %s ended %s", intent.id, status)
            message = "Your card could not be charged. Try another card."
            raise Refused(PaymentDeclinedError(message), intent.id)
        return Charge(intent.id)

    async def refund(self, stripe_id: str) -> None:
        """Refund what is left of the PaymentIntent; done also when nothing is left. Raises
        Unavailable when Stripe did not answer or refused (the reconciler tries again)."""
        try:
            await self.client.v1.refunds.create_async(
                params={"payment_intent": stripe_id},
                options={"idempotency_key": refund_key(stripe_id)},
            )
        except stripe.InvalidRequestError as exc:
            if exc.code in ALREADY_REFUNDED:
                return
            log.error("refund of %s refused: %r", stripe_id, exc)
            raise Unavailable() from None
        except stripe.StripeError as exc:
            log.warning("stripe unavailable while refunding %s: %r", stripe_id, exc)
            raise Unavailable() from None

    async def order_of(self, stripe_id: str) -> str | None:
        """The order a PaymentIntent was made for (its metadata), or None if Stripe cannot say."""
        try:
            intent = await self.client.v1.payment_intents.retrieve_async(stripe_id)
        except stripe.StripeError as exc:
            log.warning("could not read payment intent %s: %r", stripe_id, exc)
            return None
        order_id = (intent.metadata or {}).get("orderId")  # type: ignore[operator,call-overload]
        return str(order_id) if order_id else None

    async def close(self) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None:
            await http.close_async()  # type: ignore[no-untyped-call]

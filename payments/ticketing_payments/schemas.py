"""What the payments API reads and answers: the JSON of its routes, and the rules of its input."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel

from ticketing_common.validation import required, rule, trimmed

# Stripe refuses idempotency keys over 255 characters; the key is `<orderId>:<token>`.
MAX_TOKEN_LENGTH = 200


def _not_empty(value: Any) -> str:
    text = trimmed(value)
    if not text:
        raise ValueError("empty")
    return text


def _token(value: Any) -> str:
    token = _not_empty(value)
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError("too long")
    return token


class NewPayment(BaseModel):
    """`POST /api/payments`: the card (`token`, a Stripe payment method or token) and the order."""

    token: Annotated[str, AfterValidator(_token), rule("Invalid value")] = required()
    orderId: Annotated[str, AfterValidator(_not_empty), rule("Invalid value")] = required()


class PaymentOut(BaseModel):
    """The payment the order keeps: `{id}`."""

    id: str


class Received(BaseModel):
    """A Stripe webhook taken: `{"received": true}`."""

    received: bool

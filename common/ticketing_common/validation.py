"""Field rules that report the SPEC's message whatever went wrong with the field."""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError


def rule(message: str) -> WrapValidator:
    """Annotated metadata: any failure of the field (type, missing, check) reports `message`."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except (ValidationError, ValueError, TypeError, AssertionError):
            raise PydanticCustomError("rule", message) from None

    return WrapValidator(validate)


def required() -> Any:
    """Default for a ruled field, so that a missing value is reported by its rule."""
    return Field(default=None, validate_default=True)


def trimmed(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value.strip()


def email_address(value: Any) -> str:
    """Trim and lower-case; reject what is not a valid address."""
    try:
        checked = validate_email(trimmed(value), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return checked.normalized.lower()


def money(value: Any, *, maximum: float = 1_000_000) -> float:
    """A number or numeric string, > 0, at most `maximum`, at most 2 decimals."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError("not a number")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else str(value))
    except InvalidOperation:
        raise ValueError("not a number") from None
    if not amount.is_finite() or amount <= 0 or amount > maximum:
        raise ValueError("out of range")
    if amount != amount.quantize(Decimal("0.01")):
        raise ValueError("too many decimals")
    price = float(amount)
    if not math.isfinite(price):
        raise ValueError("out of range")
    return price


# Checked before pydantic's float coercion, which would turn `true` into 1.0.
Money = Annotated[float, BeforeValidator(money)]

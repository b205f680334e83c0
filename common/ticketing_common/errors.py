"""The refusals the SPEC names, as domain errors: what decisions and routes raise. Each kind's
HTTP status lives in one place, `ticketing_common.web`; nothing here knows the web framework."""

from __future__ import annotations

import math
from collections.abc import Sequence

ErrorItem = dict[str, str]


class Contention(Exception):
    """Other writers kept winning the race for one document: try again later (503)."""


def error_item(message: str, field: str | None = None) -> ErrorItem:
    return {"message": message, "field": field} if field else {"message": message}


def error_body(items: Sequence[ErrorItem]) -> dict[str, list[ErrorItem]]:
    return {"errors": list(items)}


def retry_after_seconds(seconds: float) -> int:
    """A wait as `Retry-After` takes it: whole seconds, rounded up, at least 1 (0 would invite
    an instant retry that meets the same refusal)."""
    return max(1, math.ceil(seconds))


class DomainError(Exception):
    """A refusal with a message for the user (and the field it is about, if one); a refusal that
    passes with time says when to come back (`retry_after` seconds, sent as `Retry-After`)."""

    default_message = "Bad request"

    def __init__(
        self,
        message: str | None = None,
        field: str | None = None,
        *,
        retry_after: int | None = None,
    ) -> None:
        if retry_after is not None and retry_after < 1:
            raise ValueError(f"retry_after must be at least 1 second, not {retry_after}")
        self.message = message or self.default_message
        self.field = field
        self.retry_after = retry_after
        super().__init__(self.message)

    def items(self) -> list[ErrorItem]:
        return [error_item(self.message, self.field)]


class BadRequestError(DomainError):
    """The request cannot be done as asked (a rule of the marketplace refuses it)."""


class NotAuthorizedError(DomainError):
    default_message = "Not authorized"


class ForbiddenError(DomainError):
    default_message = "Forbidden"


class PaymentDeclinedError(DomainError):
    default_message = "Your card was declined."


class NotFoundError(DomainError):
    default_message = "Not Found"


class TooManyRequestsError(DomainError):
    default_message = "Too many requests"


class ServiceUnavailableError(DomainError):
    default_message = "Service unavailable"

"""The auth API's bodies: what the routes accept (with the SPEC's validation messages) and
answer."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel

from ticketing_common.sessions import CurrentUser
from ticketing_common.validation import email_address, required, rule, trimmed


def _password_length(value: Any) -> str:
    password = trimmed(value)
    if not 4 <= len(password) <= 20:
        raise ValueError("length")
    return password


def _not_empty(value: Any) -> str:
    password = trimmed(value)
    if not password:
        raise ValueError("empty")
    return password


Email = Annotated[str, AfterValidator(email_address), rule("Email must be valid")]


class SignUp(BaseModel):
    email: Email = required()
    password: Annotated[
        str,
        AfterValidator(_password_length),
        rule("Password must be between 4 and 20 characters"),
    ] = required()


class SignIn(BaseModel):
    email: Email = required()
    password: Annotated[str, AfterValidator(_not_empty), rule("You must supply a password")] = (
        required()
    )


class UserOut(BaseModel):
    """A signed-up or signed-in user: `{id, email}`."""

    id: str
    email: str


class CurrentUserOut(BaseModel):
    """`{"currentUser": {id, email, iat, exp}}`, or `{"currentUser": null}` when signed out."""

    currentUser: CurrentUser | None


class SignedOut(BaseModel):
    """`{}`."""

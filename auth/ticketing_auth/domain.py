"""Users and failed sign-ins: the documents auth keeps and the rules around them. No I/O: the
repository stores and reads, the routes call these rules and answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict

from bson import ObjectId

from ticketing_common.errors import BadRequestError, TooManyRequestsError


class User(TypedDict):
    """A stored user (collection `users`): the email is lower-cased and unique."""

    _id: ObjectId
    email: str
    password: str  # an Argon2 hash, never the password; never in a response or a log


class SigninFailure(TypedDict):
    """One failed sign-in (collection `signin_failures`), for a known email or not."""

    email: str
    at: datetime


class PublicUser(TypedDict):
    """What anyone may see of a user: `{id, email}`."""

    id: str
    email: str


class EmailInUse(BadRequestError):
    default_message = "Email in use"


class InvalidCredentials(BadRequestError):
    """An unknown email and a wrong password alike: the answer tells them apart by nothing."""

    default_message = "Invalid credentials"


def public(user: User) -> PublicUser:
    return {"id": str(user["_id"]), "email": user["email"]}


def signed_in(user: User | None, password_matches: bool) -> User:
    """The user a sign-in proves to be, else `Invalid credentials`."""
    if user is None or not password_matches:
        raise InvalidCredentials()
    return user


def signin_failure(email: str, at: datetime) -> SigninFailure:
    return {"email": email, "at": at}


@dataclass(frozen=True)
class SigninLimit:
    """At most `max_failures` failed sign-ins per email within `window`: once an email has had
    that many, every sign-in for it (the right password too) is refused until the window has
    passed over the oldest of them."""

    max_failures: int
    window: timedelta

    def window_start(self, now: datetime) -> datetime:
        """Failures after this moment count."""
        return now - self.window

    def locked(self, recent_failures: int) -> bool:
        return recent_failures >= self.max_failures

    def check(self, recent_failures: int) -> None:
        """Refuse the sign-in (429) when the email is locked."""
        if self.locked(recent_failures):
            raise TooManyRequestsError()

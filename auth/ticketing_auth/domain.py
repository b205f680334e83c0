"""Users and failed sign-ins: the documents auth keeps and the rules around them. No I/O: the
repository stores and reads, the routes call these rules and answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict

from bson import ObjectId

from ticketing_common.errors import BadRequestError, TooManyRequestsError, retry_after_seconds


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

    def frees_at(self, recent: Sequence[datetime]) -> datetime:
        """When a locked email may sign in again: the count drops below the limit once the
        window has passed over the `max_failures`-th newest failure."""
        return sorted(recent, reverse=True)[self.max_failures - 1] + self.window

    def retry_after(self, recent: Sequence[datetime], now: datetime) -> int:
        """Seconds until `frees_at`; never past one window (another attempt's stamp may be a
        moment later than our `now`)."""
        wait = min(self.frees_at(recent) - now, self.window)
        return retry_after_seconds(wait.total_seconds())

    def check(self, recent: Sequence[datetime], now: datetime) -> None:
        """Refuse the sign-in (429) while the email is locked, saying when to come back;
        `recent` holds the times of its failures in the window."""
        if self.locked(len(recent)):
            raise TooManyRequestsError(retry_after=self.retry_after(recent, now))

"""Users and failed sign-ins: request bodies, storage and the rules around them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ticketing_auth.passwords import Passwords
from ticketing_auth.settings import Settings
from ticketing_common.errors import BadRequestError
from ticketing_common.mongo import Document, Index
from ticketing_common.runtime import Runtime
from ticketing_common.validation import email_address, required, rule, trimmed

INDEXES = {
    "users": [Index([("email", 1)], unique=True)],
    "signin_failures": [
        Index([("email", 1), ("at", -1)]),
        Index([("at", 1)], options={"expireAfterSeconds": 24 * 3600}),
    ],
}


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
    id: str
    email: str


class Users:
    """The users collection; the unique email index decides who signed up first."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db["users"]

    async def add(self, email: str, password_hash: str) -> UserOut:
        try:
            result = await self.collection.insert_one({"email": email, "password": password_hash})
        except DuplicateKeyError:
            raise BadRequestError("Email in use") from None
        return UserOut(id=str(result.inserted_id), email=email)

    async def find(self, email: str) -> Document | None:
        doc: Document | None = await self.collection.find_one({"email": email})
        return doc


class SigninFailures:
    """Failed sign-ins per email, to refuse guessing after too many within a window."""

    def __init__(self, db: AsyncDatabase[Document], limit: int, window_seconds: int) -> None:
        self.collection = db["signin_failures"]
        self.limit = limit
        self.window = timedelta(seconds=window_seconds)

    async def too_many(self, email: str) -> bool:
        since = datetime.now(UTC) - self.window
        count = await self.collection.count_documents(
            {"email": email, "at": {"$gt": since}}, limit=self.limit
        )
        return count >= self.limit

    async def record(self, email: str) -> None:
        await self.collection.insert_one({"email": email, "at": datetime.now(UTC)})


@dataclass(frozen=True)
class Accounts:
    """What the auth service's routes are given: users, sign-in failures, password hashing."""

    users: Users
    failures: SigninFailures
    passwords: Passwords

    @classmethod
    def of(cls, runtime: Runtime) -> Accounts:
        settings = runtime.settings
        assert isinstance(settings, Settings)
        failures = SigninFailures(
            runtime.db, settings.signin_max_failures, settings.signin_window_seconds
        )
        return cls(Users(runtime.db), failures, Passwords(settings))

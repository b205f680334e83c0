"""Auth's storage: the users and failed sign-ins collections, and the context its routes are
given (`Accounts`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ticketing_auth.domain import EmailInUse, SigninFailure, SigninLimit, User
from ticketing_auth.passwords import Passwords
from ticketing_auth.settings import Settings
from ticketing_common.mongo import Document, Index
from ticketing_common.runtime import Runtime

USERS = "users"
SIGNIN_FAILURES = "signin_failures"

INDEXES = {
    USERS: [Index([("email", 1)], unique=True)],
    SIGNIN_FAILURES: [
        Index([("email", 1), ("at", -1)]),
        # Failures are kept a day, far longer than any sign-in window.
        Index([("at", 1)], options={"expireAfterSeconds": 24 * 3600}),
    ],
}


def _user(doc: Document) -> User:
    return {"_id": doc["_id"], "email": doc["email"], "password": doc["password"]}


class Users:
    """The users collection; the unique email index decides who signed up first."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db[USERS]

    async def add(self, email: str, password_hash: str) -> User:
        try:
            result = await self.collection.insert_one({"email": email, "password": password_hash})
        except DuplicateKeyError:
            raise EmailInUse() from None
        return {"_id": result.inserted_id, "email": email, "password": password_hash}

    async def find(self, email: str) -> User | None:
        doc: Document | None = await self.collection.find_one({"email": email})
        return _user(doc) if doc is not None else None


class SigninFailures:
    """Failed sign-ins per email (known or not). A sign-in is recorded here before its password
    is checked (it counts as a failure until proven right), so concurrent attempts see each
    other."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db[SIGNIN_FAILURES]

    async def recent(
        self, email: str, since: datetime, *, excluding: ObjectId, at_most: int
    ) -> list[datetime]:
        """When `email` failed after `since` (not counting the attempt `excluding`), newest
        first and at most `at_most` of them: enough to tell whether it is locked, and until
        when."""
        cursor = (
            self.collection.find(
                {"email": email, "at": {"$gt": since}, "_id": {"$ne": excluding}}, {"at": 1}
            )
            .sort("at", -1)
            .limit(at_most)
        )
        return [doc["at"] async for doc in cursor]

    async def record(self, failure: SigninFailure) -> ObjectId:
        """Store a failure; its id lets a sign-in that proves right `forgive` it."""
        result = await self.collection.insert_one(dict(failure))
        inserted: ObjectId = result.inserted_id
        return inserted

    async def forgive(self, failure_id: ObjectId) -> None:
        """Remove one recorded attempt: it was refused unevaluated, or the password was right."""
        await self.collection.delete_one({"_id": failure_id})


@dataclass(frozen=True)
class Accounts:
    """What the auth service's routes are given: users, sign-in failures and their limit,
    password hashing."""

    users: Users
    failures: SigninFailures
    limit: SigninLimit
    passwords: Passwords

    @classmethod
    def of(cls, runtime: Runtime) -> Accounts:
        settings = runtime.settings
        assert isinstance(settings, Settings)
        limit = SigninLimit(
            settings.signin_max_failures, timedelta(seconds=settings.signin_window_seconds)
        )
        passwords = Passwords(settings, runtime.metrics)
        return cls(Users(runtime.db), SigninFailures(runtime.db), limit, passwords)

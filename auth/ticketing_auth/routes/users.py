"""`/api/users`: sign up, sign in, sign out, current user."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from ticketing_auth.domain import User, public, signed_in, signin_failure
from ticketing_auth.repository import Accounts
from ticketing_auth.schemas import CurrentUserOut, SignedOut, SignIn, SignUp, UserOut
from ticketing_auth.settings import Settings
from ticketing_common.errors import DomainError
from ticketing_common.service import context
from ticketing_common.sessions import OptionalUser, clear_session, issue_token, set_session
from ticketing_common.settings import get_settings

router = APIRouter(tags=["users"])


AccountsDep = Annotated[Accounts, Depends(context(Accounts))]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _signed_in(response: Response, user: User, settings: Settings) -> UserOut:
    out = UserOut.model_validate(public(user))
    token = issue_token(out.id, out.email, settings.jwt_key, settings.jwt_ttl_seconds)
    set_session(response, token, secure=settings.cookie_secure)
    return out


@router.post("/signup", status_code=status.HTTP_201_CREATED)
async def signup(
    body: SignUp, response: Response, accounts: AccountsDep, settings: SettingsDep
) -> UserOut:
    user = await accounts.users.add(body.email, await accounts.passwords.hash(body.password))
    return _signed_in(response, user, settings)


@router.post("/signin")
async def signin(
    body: SignIn, response: Response, accounts: AccountsDep, settings: SettingsDep
) -> UserOut:
    # The attempt is recorded as a failure BEFORE the password is checked, then the failures in
    # the window are read (every other attempt's too): however many arrive at once, each one
    # evaluated saw every earlier one, so at most `max_failures` wrong passwords are ever
    # checked in a window. One refused unevaluated (429, or 503 when hashing is saturated) or
    # proven right is forgiven: its record goes.
    failures, limit = accounts.failures, accounts.limit
    now = datetime.now(UTC)
    attempt = await failures.record(signin_failure(body.email, now))
    try:
        recent = await failures.recent(
            body.email, limit.window_start(now), excluding=attempt, at_most=limit.max_failures
        )
        limit.check(recent, now)
        found = await accounts.users.find(body.email)
        hashed = found["password"] if found else None
        matches = await accounts.passwords.verify(body.password, hashed)
    except DomainError:
        await failures.forgive(attempt)
        raise
    user = signed_in(found, matches)  # a wrong password keeps its record: a failure
    await failures.forgive(attempt)
    return _signed_in(response, user, settings)


@router.post("/signout")
async def signout(response: Response, settings: SettingsDep) -> SignedOut:
    clear_session(response, secure=settings.cookie_secure)
    return SignedOut()


@router.get("/currentuser")
async def currentuser(user: OptionalUser) -> CurrentUserOut:
    return CurrentUserOut(currentUser=user)

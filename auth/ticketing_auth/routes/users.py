"""`/api/users`: sign up, sign in, sign out, current user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from ticketing_auth.models import Accounts, SignIn, SigninFailures, SignUp, UserOut, Users
from ticketing_auth.passwords import Passwords
from ticketing_auth.settings import Settings
from ticketing_common.errors import BadRequestError, TooManyRequestsError
from ticketing_common.service import context_of
from ticketing_common.sessions import OptionalUser, clear_session, issue_token, set_session
from ticketing_common.settings import get_settings

router = APIRouter(tags=["users"])


async def get_users(request: Request) -> Users:
    return context_of(request, Accounts).users


async def get_failures(request: Request) -> SigninFailures:
    return context_of(request, Accounts).failures


async def get_passwords(request: Request) -> Passwords:
    return context_of(request, Accounts).passwords


UsersDep = Annotated[Users, Depends(get_users)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PasswordsDep = Annotated[Passwords, Depends(get_passwords)]


def _signed_in(response: Response, user: UserOut, settings: Settings) -> UserOut:
    token = issue_token(user.id, user.email, settings.jwt_key, settings.jwt_ttl_seconds)
    set_session(response, token, secure=settings.cookie_secure)
    return user


@router.post("/signup", status_code=status.HTTP_201_CREATED)
async def signup(
    body: SignUp,
    response: Response,
    users: UsersDep,
    passwords: PasswordsDep,
    settings: SettingsDep,
) -> UserOut:
    user = await users.add(body.email, await passwords.hash(body.password))
    return _signed_in(response, user, settings)


@router.post("/signin")
async def signin(
    body: SignIn,
    response: Response,
    users: UsersDep,
    passwords: PasswordsDep,
    failures: Annotated[SigninFailures, Depends(get_failures)],
    settings: SettingsDep,
) -> UserOut:
    if await failures.too_many(body.email):
        raise TooManyRequestsError()
    user = await users.find(body.email)
    if not await passwords.verify(body.password, user["password"] if user else None):
        await failures.record(body.email)
        raise BadRequestError("Invalid credentials")
    assert user is not None
    return _signed_in(response, UserOut(id=str(user["_id"]), email=user["email"]), settings)


@router.post("/signout")
async def signout(response: Response, settings: SettingsDep) -> dict[str, str]:
    clear_session(response, secure=settings.cookie_secure)
    return {}


@router.get("/currentuser")
async def currentuser(user: OptionalUser) -> dict[str, object]:
    return {"currentUser": user.model_dump() if user else None}

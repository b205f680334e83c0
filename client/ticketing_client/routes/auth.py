"""`/auth/signup`, `/auth/signin`, `/auth/signout`: forms that speak to the auth API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import RedirectResponse

from ticketing_client.error_pages import HtmlRoute
from ticketing_client.forms import FormDep, field
from ticketing_client.views import page, redirect
from ticketing_client.visitor import Visitor, VisitorDep
from ticketing_common.errors import ServiceUnavailableError
from ticketing_common.sessions import clear_session

router = APIRouter(route_class=HtmlRoute, include_in_schema=False)

FORMS = {
    "signup": ("Sign Up", "Create your account", "new-password"),
    "signin": ("Sign In", "Welcome back", "current-password"),
}


def _form(visitor: Visitor, kind: str, *, status: int = 200, **context: Any) -> Response:
    heading, lead, autocomplete = FORMS[kind]
    values = {"email": "", "problems": [], "fields": set(), **context}
    return page(
        visitor,
        "auth.html",
        status=status,
        kind=kind,
        heading=heading,
        lead=lead,
        password_autocomplete=autocomplete,
        **values,
    )


async def _submit(visitor: Visitor, kind: str, email: str, password: str) -> Response:
    call = visitor.api.signup if kind == "signup" else visitor.api.signin
    reply = await call(email, password)
    if reply.ok:
        return redirect(visitor, "/", cookies=reply.set_cookies)
    return _form(
        visitor,
        kind,
        status=reply.status,
        email=email,
        problems=reply.problems,
        fields=reply.fields,
    )


@router.get("/auth/signup")
async def signup_page(visitor: VisitorDep) -> Response:
    return _form(visitor, "signup")


@router.post("/auth/signup")
async def signup(visitor: VisitorDep, form: FormDep) -> Response:
    return await _submit(visitor, "signup", field(form, "email"), field(form, "password"))


@router.get("/auth/signin")
async def signin_page(visitor: VisitorDep) -> Response:
    return _form(visitor, "signin")


@router.post("/auth/signin")
async def signin(visitor: VisitorDep, form: FormDep) -> Response:
    return await _submit(visitor, "signin", field(form, "email"), field(form, "password"))


@router.get("/auth/signout")
async def signout(visitor: VisitorDep) -> Response:
    """Signs out through the API; should it be down, the cookie is cleared here all the same."""
    try:
        reply = await visitor.api.signout(visitor.session)
        cookies = reply.set_cookies
    except ServiceUnavailableError:
        cookies = ()
    if not cookies:
        cleared = RedirectResponse("/")
        clear_session(cleared, secure=visitor.settings.cookie_secure)
        cookies = tuple(cleared.headers.getlist("set-cookie"))
    return redirect(visitor, "/", cookies=cookies)

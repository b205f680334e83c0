"""Rendering: the Jinja2 environment (built once), the visitor, form tokens and HTML errors."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from ticketing_client.api import Api
from ticketing_client.settings import Settings
from ticketing_client.static import asset_url
from ticketing_common.errors import DomainError, ForbiddenError, NotFoundError
from ticketing_common.sessions import COOKIE_NAME, CurrentUser, decode_cookie, verify_token
from ticketing_common.web import status_of

log = logging.getLogger("ticketing.client")
R = TypeVar("R", bound=Response)

CSRF_COOKIE = "csrf"
CSRF_FIELD = "csrf_token"
_SEED = re.compile(r"[A-Za-z0-9_-]{32,64}")
_OBJECT_ID = re.compile(r"[0-9a-f]{24}")


def money(value: Any) -> str:
    """A price as the pages show it: dollars, thousands separated, two decimals."""
    try:
        return f"${float(value):,.2f}"
    except (TypeError, ValueError):
        return str(value)


env = Environment(
    loader=PackageLoader("ticketing_client", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    auto_reload=False,  # templates ship with the package: compile each once
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters["money"] = money
env.globals["asset"] = asset_url


class FormTokenError(ForbiddenError):
    default_message = "Invalid or missing form token"


@dataclass
class Visitor:
    """Who is asking: the signed-in user (read from the session cookie) and the form token."""

    settings: Settings
    api: Api
    user: CurrentUser | None
    session: str | None
    csrf_seed: str
    csrf_is_new: bool

    @property
    def csrf_token(self) -> str:
        return form_token(self.settings.jwt_key, self.csrf_seed)

    def page(
        self,
        template: str,
        *,
        status: int = 200,
        cookies: Iterable[str] = (),
        **context: Any,
    ) -> HTMLResponse:
        values = {
            "user": self.user,
            "csrf_field": CSRF_FIELD,
            "csrf_token": self.csrf_token,
            "stripe_key": None,
            "problems": [],
            **context,
        }
        html = env.get_template(template).render(values)
        return self._finish(HTMLResponse(html, status_code=status), cookies, context)

    def redirect(self, url: str, *, cookies: Iterable[str] = ()) -> RedirectResponse:
        """303 See Other: after a form post the browser follows with a GET."""
        return self._finish(RedirectResponse(url, status_code=303), cookies, {})

    def _finish(self, response: R, cookies: Iterable[str], context: dict[str, Any]) -> R:
        for cookie in cookies:
            response.headers.append("set-cookie", cookie)
        if self.csrf_is_new:
            flags = "; Secure" if self.settings.cookie_secure else ""
            response.headers.append(
                "set-cookie",
                f"{CSRF_COOKIE}={self.csrf_seed}; Path=/; HttpOnly; SameSite=Lax{flags}",
            )
        # Pages are per visitor: never cached, never framed, scripts only from here (and Stripe).
        response.headers["cache-control"] = "no-store"
        response.headers["referrer-policy"] = "same-origin"
        response.headers["x-content-type-options"] = "nosniff"
        response.headers["content-security-policy"] = content_policy(
            bool(context.get("stripe_key"))
        )
        return response


def content_policy(stripe: bool) -> str:
    script = "'self' https://js.stripe.com" if stripe else "'self'"
    frames = "https://js.stripe.com https://hooks.stripe.com" if stripe else "'none'"
    connect = "'self' https://api.stripe.com" if stripe else "'self'"
    images = "'self' data: https://*.stripe.com" if stripe else "'self' data:"
    return (
        f"default-src 'self'; script-src {script}; frame-src {frames}; connect-src {connect}; "
        f"img-src {images}; style-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


def form_token(key: str, seed: str) -> str:
    """Signed double submit: the form carries an HMAC of the browser's random `csrf` cookie."""
    return hmac.new(key.encode(), b"csrf:" + seed.encode(), hashlib.sha256).hexdigest()


def visitor_of(request: Request) -> Visitor:
    settings: Settings = request.app.state.settings
    raw = request.cookies.get(COOKIE_NAME)
    token = decode_cookie(raw) if raw else None
    user = verify_token(token, settings.jwt_key) if token else None
    seed = request.cookies.get(CSRF_COOKIE, "")
    is_new = not _SEED.fullmatch(seed)
    if is_new:
        seed = secrets.token_urlsafe(32)
    api = request.app.state.runtime.get(Api)
    return Visitor(settings, api, user, raw if user else None, seed, is_new)


async def get_visitor(request: Request) -> Visitor:
    """Dependency: the visitor of this request."""
    return visitor_of(request)


async def get_form(request: Request) -> FormData:
    """Dependency: the posted form, refused with 403 unless it carries this browser's token."""
    visitor = visitor_of(request)
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    if (
        visitor.csrf_is_new
        or not isinstance(sent, str)
        or not hmac.compare_digest(sent, visitor.csrf_token)
    ):
        raise FormTokenError()
    return form


VisitorDep = Annotated[Visitor, Depends(get_visitor)]
FormDep = Annotated[FormData, Depends(get_form)]


def field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def object_id(value: str) -> str:
    """A path id the APIs could know; anything else is the page's 404 at once."""
    if not _OBJECT_ID.fullmatch(value):
        raise NotFoundError()
    return value


def seconds_left(expires_at: Any, now: datetime) -> int:
    try:
        deadline = datetime.fromisoformat(str(expires_at).replace("Z", "+00:00"))
    except ValueError:
        return 0
    return max(0, int((deadline - now).total_seconds()))


# --- HTML errors ---------------------------------------------------------------------------
PAGES = {
    403: (
        "Invalid or missing form token",
        "The form was not accepted and nothing was done. Go back, reload the page and try again.",
    ),
    404: ("Page not found", "There is no such ticket, order or page."),
}


def error_page(request: Request, status: int, message: str) -> Response:
    """The HTML page for an error status; 5xx pages show the API's message when there is one."""
    title, detail = PAGES.get(status, (message, "Please try again in a moment."))
    if status >= 500:
        title = "Service unavailable" if status == 503 else "Something went wrong"
        detail = message if message != title else "Please try again in a moment."
    try:
        visitor = visitor_of(request)
    except Exception:  # not fully up (no API client yet): plain text will do
        return Response(title, status_code=status, media_type="text/plain")
    return visitor.page("error.html", status=status, title=title, detail=detail)


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    return error_page(request, status_of(exc), exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (404, 405):
        return error_page(request, 404, "Not Found")
    return error_page(request, exc.status_code, str(exc.detail))


async def _validation_error(request: Request, exc: Exception) -> Response:
    return error_page(request, 404, "Not Found")


class HtmlRoute(APIRoute):
    """A page route: an unexpected failure is logged and answered with the HTML 500 page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except (StarletteHTTPException, DomainError, RequestValidationError):
                raise
            except Exception:
                log.exception("unexpected error on %s %s", request.method, request.url.path)
                return error_page(request, 500, "Something went wrong")

        return guarded


def install_html_errors(app: FastAPI) -> None:
    """Replace the JSON error bodies of the API services with HTML pages."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

"""How a page answers: templates compiled once and rendered for the visitor, redirects, headers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from ticketing_client.forms import CSRF_FIELD
from ticketing_client.static import asset_url
from ticketing_client.visitor import Visitor
from ticketing_common.events import OrderStatus

R = TypeVar("R", bound=Response)


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
# Templates compare an order's status with `statuses.COMPLETE`, ..., not with literals.
env.globals["statuses"] = OrderStatus


def page(
    visitor: Visitor,
    template: str,
    *,
    status: int = 200,
    cookies: Iterable[str] = (),
    **context: Any,
) -> HTMLResponse:
    """The template rendered for the visitor, with `cookies` (an API's `Set-Cookie`s) passed on."""
    values = {
        "user": visitor.user,
        "csrf_field": CSRF_FIELD,
        "csrf_token": visitor.csrf_token,
        "stripe_key": None,
        "problems": [],
        **context,
    }
    html = env.get_template(template).render(values)
    response = HTMLResponse(html, status_code=status)
    return _finish(visitor, response, cookies, stripe=bool(context.get("stripe_key")))


def redirect(visitor: Visitor, url: str, *, cookies: Iterable[str] = ()) -> RedirectResponse:
    """303 See Other: after a form post the browser follows with a GET."""
    return _finish(visitor, RedirectResponse(url, status_code=303), cookies, stripe=False)


def _finish(visitor: Visitor, response: R, cookies: Iterable[str], *, stripe: bool) -> R:
    for cookie in cookies:
        response.headers.append("set-cookie", cookie)
    seed_cookie = visitor.csrf_cookie()
    if seed_cookie is not None:
        response.headers.append("set-cookie", seed_cookie)
    # Pages are per visitor: never cached, never framed, scripts only from here (and Stripe).
    response.headers["cache-control"] = "no-store"
    response.headers["referrer-policy"] = "same-origin"
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["content-security-policy"] = content_policy(stripe)
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

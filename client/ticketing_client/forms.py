"""What a visitor sends: a posted form, accepted only with this browser's CSRF token, and ids."""

from __future__ import annotations

import hmac
import re
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData

from ticketing_client.visitor import Visitor, visitor_of
from ticketing_common.errors import ForbiddenError, NotFoundError

CSRF_FIELD = "csrf_token"
_OBJECT_ID = re.compile(r"[0-9a-f]{24}")


class FormTokenError(ForbiddenError):
    default_message = "Invalid or missing form token"


def token_is_valid(visitor: Visitor, sent: object) -> bool:
    """Whether a form's token is this browser's: a browser without a seed yet (a cross-site
    post) has none, and a token made for another seed or key does not match."""
    return (
        not visitor.csrf_is_new
        and isinstance(sent, str)
        # As bytes: compare_digest refuses a str with characters beyond ASCII.
        and hmac.compare_digest(sent.encode(), visitor.csrf_token.encode())
    )


async def get_form(request: Request) -> FormData:
    """Dependency: the posted form, refused with 403 unless it carries this browser's token."""
    visitor = visitor_of(request)
    form = await request.form()
    if not token_is_valid(visitor, form.get(CSRF_FIELD)):
        raise FormTokenError()
    return form


FormDep = Annotated[FormData, Depends(get_form)]


def field(form: FormData, name: str) -> str:
    """A text field of the form; missing (or a file) reads as empty."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


def object_id(value: str) -> str:
    """A path id the APIs could know; anything else is the page's 404 at once."""
    if not _OBJECT_ID.fullmatch(value):
        raise NotFoundError()
    return value

"""Forms: the CSRF token check, reading fields and path ids."""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import pytest
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.types import Message

from ticketing_client.api import Api
from ticketing_client.forms import (
    CSRF_FIELD,
    FormTokenError,
    field,
    get_form,
    object_id,
    token_is_valid,
)
from ticketing_client.settings import Settings
from ticketing_client.visitor import form_token
from ticketing_common.errors import NotFoundError
from ticketing_common.runtime import Runtime
from ticketing_common.web import status_of
from ticketing_testing import TEST_JWT_KEY

if TYPE_CHECKING:
    from .support import MakeVisitor

SEED = "s" * 43
TOKEN = form_token(TEST_JWT_KEY, SEED)


def test_the_visitors_own_token_is_valid(make_visitor: MakeVisitor) -> None:
    assert token_is_valid(make_visitor(csrf=SEED), TOKEN)


@pytest.mark.parametrize(
    "sent",
    [None, "", "0" * 64, form_token(TEST_JWT_KEY, "t" * 43), form_token("other", SEED), "é" * 64],
    ids=["missing", "empty", "zeros", "another seed's", "another key's", "not ascii"],
)
def test_any_other_token_is_refused(make_visitor: MakeVisitor, sent: object) -> None:
    assert not token_is_valid(make_visitor(csrf=SEED), sent)


def test_a_file_is_not_a_token(make_visitor: MakeVisitor) -> None:
    upload = UploadFile(file=None, filename="x")  # type: ignore[arg-type]
    assert not token_is_valid(make_visitor(csrf=SEED), upload)


def test_a_visitor_without_a_seed_has_no_valid_token(make_visitor: MakeVisitor) -> None:
    """A cross-site post: the browser has no `csrf` cookie, so whatever it sends is refused."""
    fresh = make_visitor()
    assert fresh.csrf_is_new
    assert not token_is_valid(fresh, fresh.csrf_token)


def test_the_refusal_is_a_403_with_the_pages_text() -> None:
    error = FormTokenError()
    assert status_of(error) == 403 and error.message == "Invalid or missing form token"


def form_request(
    settings: Settings, api: Api, form: Mapping[str, str], cookies: str = ""
) -> Request:
    """A posted form as the app would receive it (no server: the ASGI scope by hand)."""
    body = urlencode(form).encode()
    runtime = Runtime(settings)
    runtime.provide(api)
    app = SimpleNamespace(state=SimpleNamespace(settings=settings, runtime=runtime))
    headers = [(b"content-type", b"application/x-www-form-urlencoded")]
    if cookies:
        headers.append((b"cookie", cookies.encode()))
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "app": app}

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


async def test_get_form_reads_a_form_with_the_visitors_token(settings: Settings, api: Api) -> None:
    data = {CSRF_FIELD: TOKEN, "title": "Show", "price": " 5 "}
    form = await get_form(form_request(settings, api, data, cookies=f"csrf={SEED}"))
    assert field(form, "title") == "Show" and field(form, "price") == " 5 "


@pytest.mark.parametrize(
    ("data", "cookies"),
    [
        ({"title": "Show"}, f"csrf={SEED}"),
        ({CSRF_FIELD: "0" * 64}, f"csrf={SEED}"),
        ({CSRF_FIELD: TOKEN}, ""),
        ({CSRF_FIELD: TOKEN}, "csrf=short"),
    ],
    ids=["no token", "wrong token", "no seed cookie", "malformed seed cookie"],
)
async def test_get_form_refuses_without_the_visitors_token(
    settings: Settings, api: Api, data: dict[str, str], cookies: str
) -> None:
    with pytest.raises(FormTokenError):
        await get_form(form_request(settings, api, data, cookies=cookies))


def test_field_reads_text_and_nothing_else() -> None:
    upload = UploadFile(file=None, filename="x")  # type: ignore[arg-type]
    form = FormData([("email", "a@b.co"), ("blank", ""), ("file", upload)])
    assert field(form, "email") == "a@b.co"
    assert field(form, "blank") == ""
    assert field(form, "missing") == ""
    assert field(form, "file") == ""


def test_object_id_passes_ids_and_404s_the_rest() -> None:
    assert object_id("0123456789abcdef01234567") == "0123456789abcdef01234567"
    for bad in ("not-an-id", "zzz", "0123456789ABCDEF01234567", "0" * 23, "0" * 25, ""):
        with pytest.raises(NotFoundError):
            object_id(bad)

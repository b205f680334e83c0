"""Who is visiting: the session cookie (read by common's sessions) and the CSRF seed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from ticketing_client.settings import Settings
from ticketing_client.visitor import CSRF_COOKIE, form_token
from ticketing_common.sessions import COOKIE_NAME, encode_cookie, issue_token
from ticketing_testing import TEST_JWT_KEY

if TYPE_CHECKING:
    from .support import MakeVisitor

SEED = "a" * 43


def session_cookie(key: str = TEST_JWT_KEY, ttl: int = 3600) -> str:
    return encode_cookie(issue_token("u1", "u1@test.com", key, ttl))


def test_cookie_names_are_common_and_client_ones() -> None:
    assert COOKIE_NAME == "session" and CSRF_COOKIE == "csrf"


def test_a_valid_session_cookie_signs_the_visitor_in(make_visitor: MakeVisitor) -> None:
    cookie = session_cookie()
    visitor = make_visitor(session=cookie)
    assert visitor.user is not None and visitor.user.email == "u1@test.com"
    assert visitor.session == cookie  # passed on to the APIs as it came


@pytest.mark.parametrize(
    "cookie",
    [
        session_cookie(key="another-key-that-is-long-enough-for-hs256"),
        session_cookie(ttl=-10),
        "not base64 at all",
        encode_cookie("not.a.jwt"),
        "",
    ],
    ids=["other key", "expired", "garbage", "not a jwt", "empty"],
)
def test_a_bad_session_cookie_is_a_signed_out_visitor(
    make_visitor: MakeVisitor, cookie: str
) -> None:
    visitor = make_visitor(session=cookie)
    assert visitor.user is None and visitor.session is None


def test_no_cookies_is_a_signed_out_visitor_with_a_new_seed(make_visitor: MakeVisitor) -> None:
    visitor = make_visitor()
    assert visitor.user is None and visitor.session is None
    assert visitor.csrf_is_new and len(visitor.csrf_seed) >= 32
    assert make_visitor().csrf_seed != visitor.csrf_seed


def test_a_well_formed_seed_is_kept(make_visitor: MakeVisitor) -> None:
    visitor = make_visitor(csrf=SEED)
    assert visitor.csrf_seed == SEED and not visitor.csrf_is_new
    assert visitor.csrf_cookie() is None  # nothing to set


@pytest.mark.parametrize("seed", ["short", "a" * 65, "a" * 40 + "!", ""])
def test_a_malformed_seed_is_replaced(make_visitor: MakeVisitor, seed: str) -> None:
    visitor = make_visitor(csrf=seed)
    assert visitor.csrf_is_new and visitor.csrf_seed != seed


def test_a_new_seed_is_set_as_a_cookie(make_visitor: MakeVisitor, settings: Settings) -> None:
    visitor = make_visitor()
    assert visitor.csrf_cookie() == f"csrf={visitor.csrf_seed}; Path=/; HttpOnly; SameSite=Lax"
    visitor.settings = settings.model_copy(update={"cookie_secure": True})
    assert (visitor.csrf_cookie() or "").endswith("; SameSite=Lax; Secure")


def test_the_form_token_signs_the_seed_with_the_key(make_visitor: MakeVisitor) -> None:
    visitor = make_visitor(csrf=SEED)
    assert visitor.csrf_token == form_token(TEST_JWT_KEY, SEED)
    assert len(visitor.csrf_token) == 64 and int(visitor.csrf_token, 16) >= 0
    assert form_token(TEST_JWT_KEY, SEED) == form_token(TEST_JWT_KEY, SEED)
    assert form_token(TEST_JWT_KEY, "b" * 43) != visitor.csrf_token
    assert form_token("another-key", SEED) != visitor.csrf_token

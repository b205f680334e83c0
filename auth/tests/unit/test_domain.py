"""Auth's rules, no server: the sign-in limit's window, the sign-in decision, the public shape."""

from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from ticketing_auth.domain import (
    EmailInUse,
    InvalidCredentials,
    SigninLimit,
    public,
    signed_in,
    signin_failure,
)
from ticketing_common.errors import TooManyRequestsError
from ticketing_common.web import status_of

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LIMIT = SigninLimit(max_failures=10, window=timedelta(minutes=15))


def _user(email="test@test.com"):
    return {"_id": ObjectId("0123456789abcdef01234567"), "email": email, "password": "$argon2id$x"}


def test_failures_count_within_the_window_before_now():
    assert LIMIT.window_start(NOW) == NOW - timedelta(minutes=15)


@pytest.mark.parametrize(("recent", "locked"), [(0, False), (9, False), (10, True), (11, True)])
def test_ten_failures_within_the_window_lock_the_email(recent, locked):
    assert LIMIT.locked(recent) is locked


def test_a_locked_email_is_refused_with_429_whatever_the_password():
    LIMIT.check(9)
    with pytest.raises(TooManyRequestsError) as refused:
        LIMIT.check(10)
    assert status_of(refused.value) == 429
    assert refused.value.items() == [{"message": "Too many requests"}]


def test_the_limit_follows_its_settings():
    strict = SigninLimit(max_failures=2, window=timedelta(seconds=1))
    assert not strict.locked(1) and strict.locked(2)
    assert strict.window_start(NOW) == NOW - timedelta(seconds=1)


def test_a_failure_records_the_email_and_when():
    assert signin_failure("ghost@test.com", NOW) == {"email": "ghost@test.com", "at": NOW}


def test_the_right_password_signs_the_user_in():
    user = _user()
    assert signed_in(user, password_matches=True) is user


@pytest.mark.parametrize(("user", "matches"), [(None, False), (None, True), (_user(), False)])
def test_an_unknown_email_and_a_wrong_password_get_one_answer(user, matches):
    with pytest.raises(InvalidCredentials) as refused:
        signed_in(user, matches)
    assert status_of(refused.value) == 400
    assert refused.value.items() == [{"message": "Invalid credentials"}]


def test_a_taken_email_is_a_400():
    assert status_of(EmailInUse()) == 400
    assert EmailInUse().items() == [{"message": "Email in use"}]


def test_the_public_shape_is_id_and_email_never_the_hash():
    assert public(_user()) == {"id": "0123456789abcdef01234567", "email": "test@test.com"}

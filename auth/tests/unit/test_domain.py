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


def _ago(*seconds):
    """Failure times, each that many seconds before NOW."""
    return [NOW - timedelta(seconds=s) for s in seconds]


def test_a_locked_email_is_refused_with_429_whatever_the_password():
    LIMIT.check(_ago(*range(9)), NOW)
    with pytest.raises(TooManyRequestsError) as refused:
        LIMIT.check(_ago(*range(10)), NOW)
    assert status_of(refused.value) == 429
    assert refused.value.items() == [{"message": "Too many requests"}]


def test_retry_after_is_when_the_oldest_counted_failure_leaves_the_window():
    with pytest.raises(TooManyRequestsError) as refused:
        LIMIT.check(_ago(600, *range(100, 109)), NOW)
    assert refused.value.retry_after == 300
    assert LIMIT.frees_at(_ago(600, *range(100, 109))) == NOW + timedelta(seconds=300)


def test_with_more_failures_than_the_limit_the_tenth_newest_decides():
    """Twelve failures: the email frees up once three have left, so at the tenth newest's."""
    recent = _ago(890, 880, 700, *range(100, 109))
    assert LIMIT.retry_after(recent, NOW) == 200
    assert LIMIT.retry_after(list(reversed(recent)), NOW) == 200


@pytest.mark.parametrize(
    ("ages", "expected"),
    [
        ((899.5, *range(9)), 1),  # half a second left: rounded up
        ((899.999, *range(9)), 1),  # a moment left: still at least 1
        ((0.4, *[0.1] * 9), 900),  # all just now: a whole window
        ((-2, *[-1] * 9), 900),  # stamped after our `now` by another attempt: one window
    ],
)
def test_retry_after_is_a_whole_number_of_seconds_within_one_window(ages, expected):
    assert LIMIT.retry_after(_ago(*ages), NOW) == expected


def test_the_limit_follows_its_settings():
    strict = SigninLimit(max_failures=2, window=timedelta(seconds=1))
    assert not strict.locked(1) and strict.locked(2)
    assert strict.window_start(NOW) == NOW - timedelta(seconds=1)
    assert strict.retry_after(_ago(0.5, 0.25), NOW) == 1


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

"""Domain errors that pass with time carry `retry_after`: whole seconds, at least 1, turned
into the `Retry-After` header by the web edge. No server."""

import pytest

from ticketing_common.errors import (
    BadRequestError,
    DomainError,
    ServiceUnavailableError,
    TooManyRequestsError,
    retry_after_seconds,
)
from ticketing_common.web import error_headers


@pytest.mark.parametrize(
    ("seconds", "header"), [(0.001, 1), (0.0, 1), (-3.0, 1), (1.0, 1), (299.01, 300), (900, 900)]
)
def test_a_wait_is_whole_seconds_rounded_up_and_at_least_one(seconds, header):
    assert retry_after_seconds(seconds) == header


def test_the_header_comes_from_the_error():
    assert error_headers(TooManyRequestsError(retry_after=300)) == {"Retry-After": "300"}
    assert error_headers(ServiceUnavailableError(retry_after=1)) == {"Retry-After": "1"}
    assert error_headers(TooManyRequestsError()) == {}
    assert error_headers(BadRequestError("Title in use")) == {}


def test_the_message_and_field_are_unchanged_by_a_retry_after():
    error = TooManyRequestsError(retry_after=5)
    assert error.items() == [{"message": "Too many requests"}]
    assert str(error) == "Too many requests"


@pytest.mark.parametrize("seconds", [0, -1])
def test_a_retry_after_below_one_second_is_a_programming_error(seconds):
    with pytest.raises(ValueError, match="at least 1 second"):
        DomainError(retry_after=seconds)

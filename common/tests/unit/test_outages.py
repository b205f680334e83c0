"""Which exceptions the web edge answers with 503: contention and the drivers' connection
failures, found without the web edge importing either driver. No server."""

import nats.errors
import pymongo.errors
import pytest

from ticketing_common.errors import Contention
from ticketing_common.web import is_outage


@pytest.mark.parametrize(
    "exc",
    [
        Contention(),
        pymongo.errors.ConnectionFailure("down"),
        pymongo.errors.ServerSelectionTimeoutError("no primary"),
        pymongo.errors.AutoReconnect("lost"),
        nats.errors.ConnectionClosedError(),
        nats.errors.NoServersError(),
        nats.errors.TimeoutError(),
    ],
)
def test_a_dependency_that_fails_is_an_outage(exc):
    assert is_outage(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad"),
        TimeoutError(),
        pymongo.errors.DuplicateKeyError("taken", 11000),
        pymongo.errors.ConfigurationError("bad uri"),
        nats.errors.NoRespondersError(),
    ],
)
def test_anything_else_is_not(exc):
    assert not is_outage(exc)

"""The API client's reading of a list's `Link: <...>; rel="next"` header, pure: the cursor is
passed on as it came, and a page without a next link has none."""

from __future__ import annotations

import pytest

from ticketing_client.api import _next_cursor


@pytest.mark.parametrize(
    ("links", "cursor"),
    [
        ({"next": {"url": "/api/tickets?limit=100&after=Ab-_0123456789xy"}}, "Ab-_0123456789xy"),
        ({"next": {"url": "http://tickets:3000/api/tickets?after=x%2By"}}, "x+y"),
        ({"next": {"url": "/api/tickets?limit=100"}}, None),
        ({"prev": {"url": "/api/tickets?after=abc"}}, None),
        ({}, None),
    ],
)
def test_the_next_cursor_comes_from_the_next_link_only(links, cursor):
    assert _next_cursor(links) == cursor

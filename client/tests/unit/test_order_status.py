"""What an order's status means to the pages, spelled with common's `OrderStatus`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ticketing_client.order_status import HOLDING, PAYABLE, seconds_left
from ticketing_common.events import OrderStatus

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def test_payable_and_holding_sets() -> None:
    assert set(PAYABLE) == {OrderStatus.CREATED, OrderStatus.AWAITING_PAYMENT}
    assert set(HOLDING) == {*PAYABLE, OrderStatus.COMPLETE}
    assert OrderStatus.CANCELLED not in HOLDING
    assert all(isinstance(status, OrderStatus) for status in HOLDING)


def test_the_apis_strings_match() -> None:
    """Orders arrive as JSON: their status is a plain string."""
    assert "created" in PAYABLE and "awaiting:payment" in PAYABLE
    assert "complete" not in PAYABLE and "complete" in HOLDING
    assert "cancelled" not in HOLDING
    malformed: list[object] = [None, {}, ["created"]]
    assert not any(status in HOLDING for status in malformed)  # a malformed order holds nothing


def test_seconds_left() -> None:
    assert seconds_left((NOW + timedelta(seconds=90.7)).isoformat(), NOW) == 90
    assert seconds_left("2025-01-01T12:15:00.000Z", NOW) == 900
    assert seconds_left((NOW - timedelta(seconds=5)).isoformat(), NOW) == 0
    assert seconds_left("not a date", NOW) == 0
    assert seconds_left(None, NOW) == 0

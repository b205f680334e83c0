"""Order changes under optimistic concurrency: a lost race is re-decided, never lost."""

import asyncio
from datetime import UTC, datetime

import pytest
from bson import ObjectId

from ticketing_common.errors import BadRequestError
from ticketing_common.mongo import update_versioned
from ticketing_common.outbox import pending_events
from ticketing_orders.domain import cancel_by_user, completing, expire, new_order
from ticketing_orders.repository import Orders


@pytest.fixture
async def stale(db, new_ticket):
    """An order as a request read it, before anyone else changed it."""
    order = new_order(str(ObjectId()), await new_ticket(), datetime.now(UTC), 900)
    await Orders(db, None).insert(order)
    return await Orders(db, None).get(order["_id"])


def _by_owner(order):
    return lambda current: cancel_by_user(current, order["userId"])


async def test_a_cancel_that_lost_to_a_payment_is_refused(db, stale):
    orders = Orders(db, None)
    await orders.transition(dict(stale), completing)

    with pytest.raises(BadRequestError, match="Cannot cancel a completed order"):
        await orders.transition(stale, _by_owner(stale))

    assert (await orders.get(stale["_id"]))["status"] == "complete"


async def test_an_expiry_that_lost_a_race_applies_on_the_new_version(db, stale):
    orders = Orders(db, None)
    await update_versioned(db["orders"], stale["_id"], 0, {"$set": {"status": "awaiting:payment"}})

    changed = await orders.transition(stale, expire)

    assert changed["status"] == "cancelled"
    assert changed["version"] == 2
    cancelled = [e for e in pending_events([changed]) if e["subject"] == "order.cancelled"]
    assert [e["data"]["version"] for e in cancelled] == [2]


async def test_concurrent_cancel_and_expiry_cancel_once(db, stale):
    orders = Orders(db, None)

    results = await asyncio.gather(
        orders.transition(dict(stale), _by_owner(stale)),
        orders.transition(dict(stale), expire),
        orders.transition(dict(stale), _by_owner(stale)),
    )

    assert sum(r is not None for r in results) == 1
    doc = await orders.get(stale["_id"])
    assert doc["status"] == "cancelled"
    assert doc["version"] == 1
    assert len([e for e in pending_events([doc]) if e["subject"] == "order.cancelled"]) == 1

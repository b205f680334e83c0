"""payments' /metrics: payments by outcome, each counted once however often it is reported
(a repeated request, a webhook), and served at 0 from the start."""

from ticketing_common.events import OrderCancelled
from ticketing_testing import bearer, eventually, scrape

from .support import add_order, new_id, payments_of

OUTCOMES = ("succeeded", "declined", "refunded")


async def _pay(client, order, user_id, token):
    body = {"orderId": str(order["_id"]), "token": token}
    return await client.post("/api/payments", json=body, headers=bearer(user_id))


async def _outcomes(client) -> dict[str, float]:
    found = await scrape(client)
    return {o: found.value("ticketing_payments_total", outcome=o) for o in OUTCOMES}


async def test_payments_are_counted_by_outcome(client, db, publish):
    assert await _outcomes(client) == {"succeeded": 0, "declined": 0, "refunded": 0}
    user_id = new_id()
    declined, kept = await add_order(db, user_id=user_id), await add_order(db, user_id=user_id)
    assert (await _pay(client, declined, user_id, "pm_card_chargeDeclined")).status_code == 402
    assert (await _pay(client, declined, user_id, "pm_card_chargeDeclined")).status_code == 402
    assert (await _pay(client, kept, user_id, "pm_card_visa")).status_code == 201
    assert (await _pay(client, kept, user_id, "pm_card_visa")).status_code == 400  # paid
    assert await _outcomes(client) == {"succeeded": 1, "declined": 1, "refunded": 0}

    # The order is cancelled after all: its kept payment is refunded, once.
    await publish(OrderCancelled(id=str(kept["_id"]), version=1, ticket={"id": new_id()}))

    async def refunded():
        (payment,) = await payments_of(db, kept["_id"])
        return payment["status"] == "refunded"

    await eventually(refunded)
    assert await _outcomes(client) == {"succeeded": 1, "declined": 1, "refunded": 1}

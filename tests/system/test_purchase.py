"""The whole purchase on the real bus with every service: pay, decline, race, expire."""

import asyncio

import httpx
import pytest
from redis.asyncio import Redis

from ticketing_common.bus import EventBus
from ticketing_testing import eventually, stream_messages

from .support import listed, user_factory


async def _status(user, order_id):
    return (await user.get(f"/api/orders/{order_id}")).json()["status"]


async def _payable(user, order_id, token="pm_card_visa"):
    """Pay as soon as payments has replicated the order."""

    async def attempt():
        response = await user.http.post("/api/payments", json={"orderId": order_id, "token": token})
        return None if response.status_code == 404 else response

    return await eventually(attempt)


async def _intents(stack, order_id):
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{stack.urls['stripe']}/_test/payment_intents")
    return [i for i in response.json()["data"] if i["metadata"].get("orderId") == order_id]


async def test_paying_completes_the_order_and_the_ticket_stays_reserved(users, stack):
    seller, buyer = await users(), await users()
    ticket = await seller.sell("gig", 20.5)
    order = await buyer.order_when_orderable(ticket["id"])

    paid = await _payable(buyer, order["id"])
    assert paid.status_code == 201, paid.text
    assert set(paid.json()) == {"id"}
    assert await eventually(lambda: _is(_status(buyer, order["id"]), "complete"))

    (intent,) = await _intents(stack, order["id"])
    assert (intent["amount"], intent["currency"], intent["status"]) == (2050, "usd", "succeeded")
    shown = (await seller.get(f"/api/tickets/{ticket['id']}")).json()
    assert shown["orderId"] == order["id"]
    assert not await listed(seller, ticket["id"])
    again = await buyer.http.post(
        "/api/payments", json={"orderId": order["id"], "token": "pm_card_visa"}
    )
    assert again.status_code == 400
    assert again.json() == {"errors": [{"message": "Order has already been paid"}]}
    cancel = await buyer.http.delete(f"/api/orders/{order['id']}")
    assert cancel.status_code == 400


async def test_a_declined_card_is_402_and_another_card_then_pays(users):
    seller, buyer = await users(), await users()
    ticket = await seller.sell()
    order = await buyer.order_when_orderable(ticket["id"])

    declined = await _payable(buyer, order["id"], "pm_card_chargeDeclined")
    assert declined.status_code == 402
    assert declined.json() == {"errors": [{"message": "Your card was declined."}]}
    assert await _status(buyer, order["id"]) == "created"

    paid = await buyer.http.post(
        "/api/payments", json={"orderId": order["id"], "token": "pm_card_visa"}
    )
    assert paid.status_code == 201
    assert await eventually(lambda: _is(_status(buyer, order["id"]), "complete"))


async def test_two_concurrent_payments_give_one_201_and_one_charge(users, stack):
    seller, buyer = await users(), await users()
    ticket = await seller.sell()
    order = await buyer.order_when_orderable(ticket["id"])
    await _replicated_to_payments(buyer, order["id"])

    body = {"orderId": order["id"], "token": "pm_card_visa"}
    responses = await asyncio.gather(
        *(buyer.http.post("/api/payments", json=body) for _ in range(2))
    )
    assert sorted(r.status_code for r in responses) == [201, 400]
    assert len(await _intents(stack, order["id"])) == 1


async def _replicated_to_payments(user, order_id):
    """Wait until payments knows the order, without paying (an empty token fails first)."""

    async def known():
        response = await user.http.post(
            "/api/payments", json={"orderId": order_id, "token": "pm_card_unknown_probe"}
        )
        return response.status_code != 404

    await eventually(known)


# Orders expire after 3 s; one whose expiry job is lost is cancelled 1 s after that at most.
SHORT_ENV = {
    "EXPIRATION_WINDOW_SECONDS": "3",
    "ORDER_OVERDUE_GRACE_SECONDS": "1",
    "OVERDUE_SWEEP_SECONDS": "0.5",
}


@pytest.fixture(scope="module")
def short_stack(tmp_path_factory):
    from devstack.testing import start_stack

    with start_stack(tmp_path_factory.mktemp("short"), SHORT_ENV) as s:
        yield s


@pytest.fixture
async def short_users(short_stack):
    async with user_factory(short_stack.url) as make:
        yield make


async def test_an_unpaid_order_expires_and_its_ticket_is_orderable_again(short_users):
    seller, buyer, next_buyer = await short_users(), await short_users(), await short_users()
    ticket = await seller.sell()
    order = await buyer.order_when_orderable(ticket["id"])

    assert await eventually(lambda: _is(_status(buyer, order["id"]), "cancelled"), within=30)
    assert await eventually(lambda: listed(seller, ticket["id"]))
    again = await next_buyer.order(ticket["id"])
    assert again.status_code == 201

    late = await buyer.http.post(
        "/api/payments", json={"orderId": order["id"], "token": "pm_card_visa"}
    )
    assert late.status_code == 400
    assert late.json()["errors"][0]["message"] in (
        "Order has expired",
        "Cannot pay for an cancelled order",
    )


async def test_a_paid_order_is_never_cancelled_by_expiration(short_users):
    seller, buyer = await short_users(), await short_users()
    ticket = await seller.sell()
    order = await buyer.order_when_orderable(ticket["id"])
    paid = await _payable(buyer, order["id"])
    assert paid.status_code == 201
    assert await eventually(lambda: _is(_status(buyer, order["id"]), "complete"))
    await asyncio.sleep(4)  # past expiresAt: expiration:complete has fired by now
    assert await _status(buyer, order["id"]) == "complete"
    assert not await listed(seller, ticket["id"])


async def test_an_order_whose_expiry_job_was_lost_is_cancelled_by_the_sweep(
    short_stack, short_users
):
    seller, buyer = await short_users(), await short_users()
    redis = Redis.from_url(short_stack.urls["redis"])
    bus = await EventBus.connect(short_stack.urls["nats"], name="system-test", stream="TICKETING")
    try:
        for _ in range(5):
            ticket = await seller.sell()
            order = await buyer.order_when_orderable(ticket["id"])
            job = f"arq:job:{order['id']}"
            assert await eventually(lambda j=job: redis.exists(j))  # expiration scheduled it
            # Redis loses the job: removed from the queue before the worker took it.
            if await redis.zrem("arq:queue", order["id"]):
                await redis.delete(job)
                break
        else:
            pytest.fail("the worker took every job before it could be removed")

        assert await eventually(lambda: _is(_status(buyer, order["id"]), "cancelled"), within=30)
        assert await eventually(lambda: listed(seller, ticket["id"]))
        fired = [
            m
            for m in await stream_messages(bus, "expiration.complete")
            if m["data"]["orderId"] == order["id"]
        ]
        assert fired == []  # the sweep cancelled it, not the lost job
    finally:
        await bus.close()
        await redis.aclose()


async def _is(awaitable, expected):
    return (await awaitable) == expected

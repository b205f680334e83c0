"""Money races on the whole stack, through the ingress: each interleaving of a payment with a
cancellation, an expiry, a lost answer or a declined card is driven step by step with the fake
Stripe server's hold/release gate, and every order must end with its money where it belongs
(see `money.py` for the invariants). Then random interleavings of all of those, seeded.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from .money import (
    ALREADY_PAID,
    CANCELLED_ORDER,
    DECLINED,
    EXPIRED,
    STREAM,
    Probe,
    message,
    order_of,
    pay,
    until,
)
from .support import User, user_factory

# A stack where orders expire quickly and the payments reconciler repairs quickly.
EXPIRY_SECONDS = 3
MONEY_ENV = {
    "EXPIRATION_WINDOW_SECONDS": str(EXPIRY_SECONDS),
    "RECONCILE_SECONDS": "0.5",
    "RECONCILE_AFTER_SECONDS": "2",
}
# How long an order may take to be cancelled by expiry, past its window, on a busy machine.
EXPIRY_WAIT = EXPIRY_SECONDS + 30


@pytest.fixture(scope="module")
def money_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from devstack.testing import start_stack

    with start_stack(tmp_path_factory.mktemp("money"), MONEY_ENV) as running:
        yield running


@dataclass
class World:
    """A stack, a probe on it and a way to sign up users."""

    stack: Any
    probe: Probe
    make: Callable[[], Awaitable[User]]

    async def fresh_order(self, price: float = 25.5) -> tuple[User, dict[str, Any], dict[str, Any]]:
        """A new ticket ordered by a new buyer; payments knows the order."""
        seller, buyer = await self.make(), await self.make()
        ticket = await seller.sell("money", price)
        order = await buyer.order_when_orderable(ticket["id"])
        await until(lambda: self.probe.known_to_payments(order["id"]))
        return buyer, ticket, order


async def _world(stack: Any) -> AsyncIterator[World]:
    async with user_factory(stack.url) as make, Probe(stack) as probe:
        yield World(stack, probe, make)


@pytest.fixture
async def shared(stack: Any) -> AsyncIterator[World]:
    """The session's stack: orders stay payable for 15 minutes."""
    async for world in _world(stack):
        yield world


@pytest.fixture
async def money(money_stack: Any) -> AsyncIterator[World]:
    """The short stack: orders expire after EXPIRY_SECONDS."""
    async for world in _world(money_stack):
        yield world


async def _status_is(user: User, order_id: str, *statuses: str) -> dict[str, Any] | None:
    order = await order_of(user, order_id)
    return order if order["status"] in statuses else None


async def _ticket_holder(probe: Probe, ticket_id: str) -> str | None:
    shown = (await probe.http.get(f"/api/tickets/{ticket_id}")).json()
    holder: str | None = shown.get("orderId")
    return holder


async def _orderable_again(world: World, ticket: dict[str, Any]) -> dict[str, Any]:
    """The ticket is free again: tickets released it, a second buyer gets it and holds it. The
    second buyer then cancels (so that no expiry changes things while the test looks)."""

    async def holder_is(order_id: str | None) -> bool:
        return await _ticket_holder(world.probe, ticket["id"]) == order_id

    await until(lambda: holder_is(None))
    second = await world.make()
    again = await second.order(ticket["id"])
    assert again.status_code == 201, again.text
    order_id = again.json()["id"]
    await until(lambda: holder_is(order_id))
    assert (await second.http.delete(f"/api/orders/{order_id}")).status_code == 204
    await until(lambda: holder_is(None))
    return await order_of(second, order_id)


def _answer(response: httpx.Response) -> tuple[int, str | None]:
    return response.status_code, message(response)


# --- (a) paid, then the expiry fires -------------------------------------------------------------


async def test_paid_then_the_expiry_fires_the_order_stays_complete(money: World) -> None:
    probe = money.probe
    for _ in range(3):
        buyer, ticket, order = await money.fresh_order()
        paid = await pay(buyer, order["id"])
        # The window is short: on a stalled machine it may pass before the payment; then again.
        if _answer(paid) not in ((400, EXPIRED), (400, CANCELLED_ORDER)):
            break
    assert paid.status_code == 201, paid.text
    assert await until(lambda: _status_is(buyer, order["id"], "complete"))

    # Expiration's job fires at expiresAt; wait until orders has handled its event.
    async def expiry_sent() -> int:
        events = await probe.events_of(order["id"], "expiration.complete")
        return events[0]["seq"] if events else 0

    seq = await until(expiry_sent, EXPIRY_WAIT)
    await until(lambda: probe.consumer_past("orders-expiration-complete", seq))

    await probe.settle([order["id"]])
    final = await order_of(buyer, order["id"])
    assert (final["status"], final["refunded"]) == ("complete", False)
    (intent,) = await probe.intents(order["id"])
    assert (intent["status"], intent["amount_refunded"]) == ("succeeded", 0)
    assert await probe.refunds([intent["id"]]) == []
    assert await probe.events_of(order["id"], "order.cancelled") == []
    await probe.assert_money([final], ticket["id"])


# --- (b) cancelled by the buyer while the charge is in flight ------------------------------------


@pytest.mark.parametrize("stage", ["request", "answer"])
async def test_cancelled_while_the_charge_is_in_flight_is_refunded(
    shared: World, stage: str
) -> None:
    """`request`: payments called Stripe, which has not charged yet; `answer`: Stripe charged,
    its answer has not reached payments yet. Meanwhile another tab cancels the order."""
    probe = shared.probe
    buyer, ticket, order = await shared.fresh_order()
    paying, held = await probe.hold_payment(buyer, order["id"], stage=stage)
    assert held, (await paying).text

    cancelled = await buyer.http.delete(f"/api/orders/{order['id']}")
    assert cancelled.status_code == 204, cancelled.text
    assert (await order_of(buyer, order["id"]))["status"] == "cancelled"
    await until(lambda: probe.cancelled_for_payments(order["id"]))
    charged = [i["status"] for i in await probe.intents(order["id"])]
    assert charged == ([] if stage == "request" else ["succeeded"])

    assert await probe.release() == 1
    answer = await asyncio.wait_for(paying, 30)
    assert _answer(answer) == (400, CANCELLED_ORDER), answer.text

    (intent,) = await probe.intents(order["id"])
    assert intent["status"] == "succeeded"
    assert intent["amount_refunded"] == intent["amount"] == 2550
    (refund,) = await probe.refunds([intent["id"]])
    assert refund["amount"] == 2550
    final = await until(lambda: _refunded(buyer, order["id"]))
    assert final["status"] == "cancelled"
    assert len(await probe.events_of(order["id"], "payment.refunded")) == 1

    second = await _orderable_again(shared, ticket)
    await probe.settle([order["id"]])
    final = await order_of(buyer, order["id"])
    await probe.assert_money([final], None)
    assert await probe.ticket_problems(ticket["id"], [final, second]) == []


async def _refunded(user: User, order_id: str) -> dict[str, Any] | None:
    order = await order_of(user, order_id)
    return order if order["refunded"] else None


# --- (c) expired while the charge is in flight ---------------------------------------------------


async def test_expired_while_the_charge_is_in_flight_is_refunded(money: World) -> None:
    probe = money.probe
    for _ in range(3):
        buyer, ticket, order = await money.fresh_order()
        paying, held = await probe.hold_payment(buyer, order["id"])
        if held:
            break
        # The window passed before payments called Stripe (a stalled machine): again.
        assert _answer(paying.result()) in ((400, EXPIRED), (400, CANCELLED_ORDER))
    assert held, "the payment never reached Stripe within the order's window"

    expired = await until(lambda: _status_is(buyer, order["id"], "cancelled"), EXPIRY_WAIT)
    assert len(await probe.events_of(order["id"], "expiration.complete")) >= 1
    assert len(await probe.events_of(order["id"], "order.cancelled")) == 1
    assert expired["refunded"] is False
    await until(lambda: probe.cancelled_for_payments(order["id"]))
    assert await probe.intents(order["id"]) == []  # Stripe has not charged yet

    assert await probe.release() == 1
    answer = await asyncio.wait_for(paying, 30)
    assert _answer(answer) == (400, CANCELLED_ORDER), answer.text

    (intent,) = await probe.intents(order["id"])
    assert intent["amount_refunded"] == intent["amount_received"] == 2550
    final = await until(lambda: _refunded(buyer, order["id"]))
    assert final["status"] == "cancelled"
    second = await _orderable_again(money, ticket)
    await probe.settle([order["id"]])
    final = await order_of(buyer, order["id"])
    await probe.assert_money([final], None)
    assert await probe.ticket_problems(ticket["id"], [final, second]) == []


# --- (d) the answer to a successful charge is lost -----------------------------------------------


async def test_a_lost_answer_then_the_same_request_again_charges_once(shared: World) -> None:
    """Stripe charged, the answer never arrived (503); the buyer sends the same request again:
    the same idempotency key gives the same PaymentIntent, and the order is paid once. Stripe's
    webhooks are held back meanwhile, so that only the retry can settle the attempt."""
    probe = shared.probe
    await probe.pause_webhooks()
    buyer, ticket, order = await shared.fresh_order()
    await probe.add_fault(fail_after_processing=True, match="POST /v1/payment_intents", count=1)

    lost = await pay(buyer, order["id"])
    assert _answer(lost) == (503, "Service unavailable"), lost.text
    (intent,) = await probe.intents(order["id"])
    assert intent["status"] == "succeeded"  # charged, unbeknown to payments
    assert [a["status"] for a in await probe.attempts(order["id"])] == ["pending"]
    assert (await order_of(buyer, order["id"]))["status"] == "created"

    again = await pay(buyer, order["id"])
    assert again.status_code == 201, again.text
    assert [i["id"] for i in await probe.intents(order["id"])] == [intent["id"]]
    final = await until(lambda: _status_is(buyer, order["id"], "complete"))

    # Stripe's webhooks for the charge arrive late, one of them twice: nothing changes.
    await probe.resume_webhooks()
    events = await probe.stripe_events(intent["id"])
    assert [e["type"] for e in events] == ["payment_intent.succeeded"]
    for event in (*events, *events):
        (delivery,) = await probe.redeliver(event["id"])
        assert delivery["status"] == 200, delivery

    await probe.settle([order["id"]])
    assert len(await probe.intents(order["id"])) == 1
    assert len(await probe.events_of(order["id"], "payment.created")) == 1
    await probe.assert_money([final], ticket["id"])


async def test_a_lost_answer_settled_by_the_webhook_then_a_retry_charges_nothing_more(
    shared: World,
) -> None:
    probe = shared.probe
    buyer, ticket, order = await shared.fresh_order()
    await probe.add_fault(fail_after_processing=True, match="POST /v1/payment_intents", count=1)
    lost = await pay(buyer, order["id"])
    assert _answer(lost) == (503, "Service unavailable"), lost.text

    # Stripe's `payment_intent.succeeded` webhook tells payments what the answer would have.
    await until(lambda: _status_is(buyer, order["id"], "complete"))
    again = await pay(buyer, order["id"])
    assert _answer(again) == (400, ALREADY_PAID), again.text

    await probe.settle([order["id"]])
    assert len(await probe.intents(order["id"])) == 1
    final = await order_of(buyer, order["id"])
    await probe.assert_money([final], ticket["id"])


async def test_a_lost_answer_and_no_webhook_the_reconciler_finishes_the_attempt(
    shared: World,
) -> None:
    """Nobody asks again and Stripe's webhook never comes: the reconciler repeats the call with
    the attempt's key (RECONCILE_AFTER_SECONDS, 10 s on this stack), finds the charge, keeps it."""
    probe = shared.probe
    await probe.pause_webhooks()
    buyer, ticket, order = await shared.fresh_order()
    await probe.add_fault(fail_after_processing=True, match="POST /v1/payment_intents", count=1)
    lost = await pay(buyer, order["id"])
    assert _answer(lost) == (503, "Service unavailable"), lost.text

    final = await until(lambda: _status_is(buyer, order["id"], "complete"), 45)
    await probe.settle([order["id"]])
    assert len(await probe.intents(order["id"])) == 1
    await probe.assert_money([final], ticket["id"])


# --- (e) a declined card, then a good one --------------------------------------------------------


async def test_a_declined_card_then_a_good_one_keeps_one_charge(shared: World) -> None:
    probe = shared.probe
    buyer, ticket, order = await shared.fresh_order()
    declined = await pay(buyer, order["id"], "pm_card_chargeDeclined")
    assert _answer(declined) == (402, DECLINED)
    assert (await order_of(buyer, order["id"]))["status"] == "created"
    paid = await pay(buyer, order["id"], "pm_card_visa")
    assert paid.status_code == 201, paid.text

    final = await until(lambda: _status_is(buyer, order["id"], "complete"))
    await probe.settle([order["id"]])
    statuses = [i["status"] for i in await probe.intents(order["id"])]
    assert statuses == ["requires_payment_method", "succeeded"]
    assert sorted(a["status"] for a in await probe.attempts(order["id"])) == [
        "failed",
        "succeeded",
    ]
    await probe.assert_money([final], ticket["id"])


async def test_a_declined_charge_in_flight_while_a_good_card_pays(shared: World) -> None:
    probe = shared.probe
    buyer, ticket, order = await shared.fresh_order()
    declining, held = await probe.hold_payment(buyer, order["id"], "pm_card_chargeDeclined")
    assert held, (await declining).text
    paid = await pay(buyer, order["id"], "pm_card_visa")
    assert paid.status_code == 201, paid.text
    await until(lambda: _status_is(buyer, order["id"], "complete"))

    assert await probe.release() == 1
    answer = await asyncio.wait_for(declining, 30)
    assert _answer(answer) == (402, DECLINED), answer.text
    await probe.settle([order["id"]])
    final = await order_of(buyer, order["id"])
    await probe.assert_money([final], ticket["id"])


async def test_two_cards_charged_at_once_keep_one_and_refund_the_other(shared: World) -> None:
    """Two tabs pay with two cards; Stripe charges both. One is kept, the other refunded."""
    probe = shared.probe
    buyer, ticket, order = await shared.fresh_order()
    first, held = await probe.hold_payment(buyer, order["id"], "pm_card_visa")
    assert held, (await first).text
    second, held = await probe.hold_payment(buyer, order["id"], "pm_card_mastercard")
    assert held, (await second).text

    assert await probe.release() == 1
    assert (await asyncio.wait_for(first, 30)).status_code == 201
    assert await probe.release() == 1
    late = await asyncio.wait_for(second, 30)
    assert _answer(late) == (400, ALREADY_PAID), late.text

    final = await until(lambda: _refunded(buyer, order["id"]))
    assert final["status"] == "complete"
    await probe.settle([order["id"]])
    charges = await probe.intents(order["id"])
    assert [(i["status"], i["amount_refunded"]) for i in charges] == [
        ("succeeded", 0),
        ("succeeded", 2550),
    ]
    await probe.assert_money([await order_of(buyer, order["id"])], ticket["id"])


# --- the ticket follows its live order, however late a cancellation arrives ---------------------


async def test_a_late_cancellation_leaves_the_ticket_with_the_next_order(shared: World) -> None:
    """The first buyer cancels and a second one orders at once; tickets hears the second
    `order:created` before the first `order:cancelled` (its consumer of cancellations is slow:
    paused here, as a busy replica would be). The ticket must end held by the second order,
    which is live, not free (listed for sale, editable) while someone is paying for it."""
    probe = shared.probe
    seller, first, second = await shared.make(), await shared.make(), await shared.make()
    ticket = await seller.sell("late cancel", 30)
    gone = await first.order_when_orderable(ticket["id"])

    async def held_by_first() -> bool:
        return await _ticket_holder(probe, ticket["id"]) == gone["id"]

    await until(held_by_first)
    slow = "tickets-order-cancelled"
    # A safety net: the pause ends by itself in a minute should the test stop half way.
    resume_at = datetime.now(UTC) + timedelta(seconds=60)
    await probe.js.pause_consumer(STREAM, slow, resume_at.strftime("%Y-%m-%dT%H:%M:%SZ"))
    try:
        cancelled = await first.http.delete(f"/api/orders/{gone['id']}")
        assert cancelled.status_code == 204, cancelled.text
        placed = await second.order(ticket["id"])
        assert placed.status_code == 201, placed.text
        live = placed.json()

        async def created_seq() -> int:
            events = await probe.events_of(live["id"], "order.created")
            return int(events[0]["seq"]) if events else 0

        seq = await until(created_seq)
        # tickets has seen the new order while the old one still holds the ticket.
        await until(lambda: probe.consumer_tried("tickets-order-created", seq))
    finally:
        await probe.js.resume_consumer(STREAM, slow)

    async def cancel_seq() -> int:
        events = await probe.events_of(gone["id"], "order.cancelled")
        return int(events[0]["seq"]) if events else 0

    seq = await until(cancel_seq)
    await until(lambda: probe.consumer_past(slow, seq))
    await until(probe.quiet)
    orders = [await order_of(first, gone["id"]), await order_of(second, live["id"])]
    assert [o["status"] for o in orders] == ["cancelled", "created"]
    assert await probe.ticket_problems(ticket["id"], orders) == []


# --- random interleavings ------------------------------------------------------------------------

CARDS = ("pm_card_visa", "pm_card_mastercard", "tok_visa", "pm_card_chargeDeclined")
CARD_WEIGHTS = (3, 2, 2, 1)
# Steps and their weights, by whether an order is open (`created`) and a payment is held: the
# point is to hold payments and to end their orders (cancel, expiry) while they are held.
STEPS: dict[str, Callable[[bool, bool], float]] = {
    "order": lambda open_, held: 0.5 if open_ else 4,
    "pay": lambda open_, held: 0.5,
    "pay_held": lambda open_, held: (2 if held else 5) if open_ else 0.5,
    "pay_lost": lambda open_, held: 0.5 if open_ else 0.25,
    "cancel": lambda open_, held: (5 if held else 1) if open_ else 0.5,
    "expire": lambda open_, held: (3 if held else 1) if open_ else 0,
    "release": lambda open_, held: 3 if held else 0,
    "quiet": lambda open_, held: 1,
}
# More seeds than the suite's twelve: MONEY_SEEDS=200 .venv/bin/pytest tests/system/test_money.py
PAY_ANSWERS = {
    (201, None),
    (400, CANCELLED_ORDER),
    (400, ALREADY_PAID),
    (400, EXPIRED),
}


@dataclass
class Interleaving:
    """One seeded run: buyers A and B around one ticket, each step chosen by `rng`."""

    world: World
    rng: random.Random
    ticket: dict[str, Any]
    buyers: dict[str, User]
    orders: list[tuple[str, str]] = field(default_factory=list)  # (buyer, order id)
    # What waits at the fake's gate, oldest first: a payment and its card, or None for a dummy.
    held: deque[tuple[asyncio.Task[httpx.Response], str] | None] = field(default_factory=deque)
    log: list[str] = field(default_factory=list)
    open: set[str] = field(default_factory=set)  # orders `created` before this step
    last: dict[str, str] = field(default_factory=dict)  # the statuses before this step

    @property
    def probe(self) -> Probe:
        return self.world.probe

    def note(self, text: str) -> None:
        self.log.append(text)

    def fail(self, text: str) -> str:
        return "\n".join([text, "steps:", *self.log])

    def pick_order(self) -> tuple[str, str]:
        """Mostly an open order, else any (paying for or cancelling an ended one is fine too)."""
        open_ = [o for o in self.orders if o[1] in self.open]
        if open_ and self.rng.random() < 0.9:
            return self.rng.choice(open_)
        return self.rng.choice(self.orders)

    async def next_step(self) -> str:
        """A step that can do something now, by weight."""
        statuses = await self.statuses()
        self.last = {oid: order["status"] for oid, order in statuses.items()}
        self.open = {oid for oid, status in self.last.items() if status == "created"}
        kinds = [k for k in STEPS if self.orders or k in ("order", "quiet")]
        weights = [STEPS[k](bool(self.open), bool(self.held)) for k in kinds]
        return self.rng.choices(kinds, weights)[0]

    def sold(self) -> bool:
        return any(status == "complete" for status in self.last.values())

    async def statuses(self) -> dict[str, dict[str, Any]]:
        return {oid: await order_of(self.buyers[who], oid) for who, oid in self.orders}

    def check_pay_answer(self, response: httpx.Response, token: str, lost: bool) -> None:
        answer = _answer(response)
        allowed = set(PAY_ANSWERS)
        if token == "pm_card_chargeDeclined":
            allowed = (allowed - {(201, None)}) | {(402, DECLINED)}
        if lost:
            allowed.add((503, "Service unavailable"))
        assert answer in allowed, self.fail(f"payment answered {answer}")

    # --- steps ---

    async def order(self) -> None:
        who = self.rng.choice("AB")
        response = await self.buyers[who].order(self.ticket["id"])
        self.note(f"{who} orders: {_answer(response)}")
        if response.status_code != 201:
            assert _answer(response) == (400, "Ticket is already reserved"), self.fail("order")
            return
        new = response.json()["id"]
        # No other order of the ticket may be live: were one, it was live when this one was made.
        others = {k: v["status"] for k, v in (await self.statuses()).items() if k != new}
        assert all(s == "cancelled" for s in others.values()), self.fail(f"two live: {others}")
        self.orders.append((who, new))
        await until(lambda: self.probe.known_to_payments(new))

    async def pay(self, mode: str = "now") -> None:
        who, oid = self.pick_order()
        token = self.rng.choices(CARDS, CARD_WEIGHTS)[0]
        user = self.buyers[who]
        if mode == "held":
            # Held before Stripe charges, or after it charged with its answer held back.
            stage = self.rng.choice(("request", "answer"))
            task, held = await self.probe.hold_payment(
                user, oid, token, stage=stage, leftover="dummy"
            )
            self.held.append((task, token) if held else None)
            if held:
                self.note(f"{who} pays {oid[-4:]} with {token}: held ({stage})")
                return
            response = task.result()
        elif mode == "lost":
            rule = await self.probe.add_fault(
                fail_after_processing=True, match="POST /v1/payment_intents", count=1
            )
            response = await pay(user, oid, token)
            if not await self.probe.rule_taken(rule):
                await self.probe.take_rule_with_a_dummy()
            await until(lambda: self.probe.rule_taken(rule))
        else:
            response = await pay(user, oid, token)
        self.note(f"{who} pays {oid[-4:]} with {token} ({mode}): {_answer(response)}")
        self.check_pay_answer(response, token, lost=mode == "lost")

    async def pay_held(self) -> None:
        await self.pay("held")

    async def pay_lost(self) -> None:
        await self.pay("lost")

    async def cancel(self) -> None:
        who, oid = self.pick_order()
        response = await self.buyers[who].http.delete(f"/api/orders/{oid}")
        status = (await order_of(self.buyers[who], oid))["status"]
        self.note(f"{who} cancels {oid[-4:]}: {_answer(response)}, now {status}")
        if response.status_code == 204:
            assert status == "cancelled", self.fail("cancelled, yet not")
        else:
            assert _answer(response) == (400, "Cannot cancel a completed order"), self.fail("?")
            assert status == "complete", self.fail("refused to cancel an unpaid order")

    async def expire(self) -> None:
        """Let an open order run out of time: wait until expiry (or a payment) ends it."""
        statuses = await self.statuses()
        open_ = [(w, o) for w, o in self.orders if statuses[o]["status"] == "created"]
        if not open_:
            self.note("expire: no open order")
            return
        who, oid = self.rng.choice(open_)
        ended = await until(
            lambda: _status_is(self.buyers[who], oid, "cancelled", "complete"), EXPIRY_WAIT
        )
        self.note(f"{oid[-4:]} runs out of time: {ended['status']}")

    async def release(self) -> None:
        """Let the oldest held Stripe call go on, and wait for its payment's answer."""
        if not self.held:
            self.note("release: nothing held")
            return
        entry = self.held.popleft()
        assert await self.probe.release() == 1, self.fail("nothing was held")
        if entry is None:
            self.note("released: a dummy")
            return
        task, token = entry
        response = await asyncio.wait_for(task, 30)
        self.note(f"released ({token}): {_answer(response)}")
        self.check_pay_answer(response, token, lost=False)

    async def quiet(self) -> None:
        """Let the events in flight land before the next step."""
        await until(self.probe.quiet, 30)
        self.note("quiet")

    # --- the run ---

    async def play(self, steps: int) -> None:
        for _ in range(steps):
            step = await self.next_step()
            if not self.held and self.sold():
                break  # nothing can happen to this ticket's money any more
            await getattr(self, step)()
        while self.held:
            await self.release()
        for who, oid in self.orders:  # every order ends: paid, cancelled or expired
            user = self.buyers[who]
            await until(
                lambda u=user, o=oid: _status_is(u, o, "cancelled", "complete"), EXPIRY_WAIT
            )
        await self.probe.settle([oid for _, oid in self.orders])
        orders = list((await self.statuses()).values())
        self.note(
            "final: "
            + ", ".join(f"{o['id'][-4:]} {o['status']} refunded={o['refunded']}" for o in orders)
        )
        await self.probe.assert_money(orders, None, self.fail("invariants"))
        assert await self.probe.dead_letters() == 0, self.fail("events went to dead letters")
        ticket = await self.probe.ticket_problems(self.ticket["id"], orders)
        assert ticket == [], self.fail("\n".join(ticket))


@pytest.mark.parametrize("seed", range(int(os.environ.get("MONEY_SEEDS", "12"))))
async def test_random_interleavings_end_with_the_money_where_it_belongs(
    money: World, seed: int
) -> None:
    rng = random.Random(seed)
    seller, a, b = await money.make(), await money.make(), await money.make()
    ticket = await seller.sell(f"seed {seed}", rng.choice([5, 12.34, 20, 99.99]))
    await until(lambda: money.probe.known_to_orders(ticket["id"]))
    run = Interleaving(money, rng, ticket, {"A": a, "B": b})
    try:
        await run.play(rng.randint(6, 10))
    finally:
        await money.probe.clear_faults()
        await asyncio.gather(*(e[0] for e in run.held if e), return_exceptions=True)

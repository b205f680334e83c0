"""What the money tests look at, on a running stack: the fake Stripe server (its records and its
hold/release gate), the payments database, the event stream, and the invariants every order must
end in (SPEC §3 payments, **[money]**):

- `complete`: exactly one kept (succeeded, not refunded) charge at Stripe, kept by payments, and
  the bus said `payment:created` for it and never `payment:refunded`;
- `cancelled`: no kept charge (every succeeded charge refunded, each announced with
  `payment:refunded`), exactly one `order:cancelled`;
- the order's `refunded` flag says whether any of its charges was refunded;
- the ticket is held (tickets' `orderId`) by its one non-cancelled order, if any, else by none.

Every wait here is on a condition (`eventually`), never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import httpx
import nats
from bson import ObjectId
from nats.js.errors import NotFoundError
from pymongo import AsyncMongoClient

from ticketing_common.bus import DEAD_LETTER_STREAM
from ticketing_testing import eventually

from .support import User

STREAM = "TICKETING"
INTENTS = "POST /v1/payment_intents"
CANCELLED_ORDER = "Cannot pay for an cancelled order"
ALREADY_PAID = "Order has already been paid"
EXPIRED = "Order has expired"
DECLINED = "Your card was declined."
SETTLE_WITHIN = 60.0
# How `ticket_problems` words a live order whose ticket tickets does not hold.
UNHELD = "the live order's ticket is not held"
# Collections whose documents carry an outbox (events written, maybe not yet published).
OUTBOXES = (("orders", "orders"), ("tickets", "tickets"), ("payments", "orders"))


def message(response: httpx.Response) -> str | None:
    """The first error message of an API answer, if it is an error."""
    if response.status_code < 400:
        return None
    try:
        return str(response.json()["errors"][0]["message"])
    except (ValueError, KeyError, IndexError, TypeError):
        return response.text


async def pay(user: User, order_id: str, token: str = "pm_card_visa") -> httpx.Response:
    return await user.http.post("/api/payments", json={"orderId": order_id, "token": token})


async def order_of(user: User, order_id: str) -> dict[str, Any]:
    response = await user.get(f"/api/orders/{order_id}")
    assert response.status_code == 200, response.text
    order: dict[str, Any] = response.json()
    return order


async def until(check: Callable[[], Awaitable[Any]], within: float = 15.0) -> Any:
    """`eventually`, for a condition written as an async function."""
    return await eventually(check, within=within)


class Probe:
    """One test's view of a stack, from outside the services (their own stores and the bus)."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.stripe = httpx.AsyncClient(base_url=stack.urls["stripe"], timeout=30)
        self.http = httpx.AsyncClient(base_url=stack.url, timeout=30)
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            stack.urls["mongo"], serverSelectionTimeoutMS=5000
        )
        self.messages: list[dict[str, Any]] = []
        self._next_seq = 0
        self._webhook_url: str | None = None
        self._dummies: list[asyncio.Task[httpx.Response]] = []

    async def __aenter__(self) -> Probe:
        self.nc = await nats.connect(self.stack.urls["nats"])
        self.js = self.nc.jetstream()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Never leave a rule or a held request behind for the next test on this stack.
        await self.clear_faults()
        if self._webhook_url is not None:
            await self.configure_webhooks(url=self._webhook_url)
        if self._dummies:
            await asyncio.gather(*self._dummies, return_exceptions=True)
        await self.nc.close()
        await self.mongo.close()
        await self.stripe.aclose()
        await self.http.aclose()

    # --- the fake Stripe server: records ---------------------------------------------------------

    async def intents(self, order_id: str) -> list[dict[str, Any]]:
        """The order's PaymentIntents, oldest first."""
        response = await self.stripe.get("/_test/payment_intents")
        return [i for i in response.json()["data"] if i["metadata"].get("orderId") == order_id]

    async def refunds(self, intent_ids: Iterable[str]) -> list[dict[str, Any]]:
        wanted = set(intent_ids)
        response = await self.stripe.get("/_test/refunds")
        return [r for r in response.json()["data"] if r["payment_intent"] in wanted]

    async def stripe_events(self, intent_id: str) -> list[dict[str, Any]]:
        """Stripe's events about one PaymentIntent (its charge's too), oldest first."""
        response = await self.stripe.get("/_test/events")
        found = []
        for event in response.json()["data"]:
            obj = event["data"]["object"]
            if intent_id in (obj.get("id"), obj.get("payment_intent")):
                found.append(event)
        return found

    async def webhooks(self) -> dict[str, Any]:
        view: dict[str, Any] = (await self.stripe.get("/_test/webhooks")).json()
        return view

    async def configure_webhooks(self, **changes: Any) -> None:
        response = await self.stripe.post("/_test/webhooks", json=changes)
        assert response.status_code == 200, response.text

    async def pause_webhooks(self) -> None:
        """Stripe stops delivering (until the test ends): only the API answers tell payments."""
        if self._webhook_url is None:
            self._webhook_url = (await self.webhooks())["url"]
        await self.configure_webhooks(url="")

    async def resume_webhooks(self) -> None:
        if self._webhook_url is not None:
            await self.configure_webhooks(url=self._webhook_url)
            self._webhook_url = None

    async def redeliver(self, event_id: str) -> list[dict[str, Any]]:
        response = await self.stripe.post("/_test/webhooks/redeliver", json={"id": event_id})
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    # --- the fake Stripe server: the gate ----------------------------------------------------

    async def faults(self) -> dict[str, Any]:
        view: dict[str, Any] = (await self.stripe.get("/_test/faults")).json()
        return view

    async def add_fault(self, **rule: Any) -> str:
        response = await self.stripe.post("/_test/faults", json=rule)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    async def held(self) -> int:
        return int((await self.faults())["held"])

    async def rule_taken(self, rule_id: str) -> bool:
        """Whether a request has taken the rule (a rule with `count: 1` goes once taken)."""
        return all(f["id"] != rule_id for f in (await self.faults())["faults"])

    async def release(self, count: int | None = 1) -> int:
        body = {} if count is None else {"count": count}
        response = await self.stripe.post("/_test/faults/release", json=body)
        assert response.status_code == 200, response.text
        return int(response.json()["released"])

    async def clear_faults(self) -> None:
        await self.stripe.delete("/_test/faults")

    def take_rule_with_a_dummy(self) -> asyncio.Task[httpx.Response]:
        """A request of no account at the fake, to use up a rule that the payment it was meant
        for never reached (payments refused it first): Stripe answers it 401, and nothing else."""
        task = asyncio.create_task(self.stripe.post("/v1/payment_intents", data={}))
        self._dummies.append(task)
        return task

    async def hold_payment(
        self,
        user: User,
        order_id: str,
        token: str = "pm_card_visa",
        *,
        stage: str = "request",
        leftover: str = "clear",
    ) -> tuple[asyncio.Task[httpx.Response], bool]:
        """Pay with the Stripe call held at the fake: before Stripe does anything (`request`)
        or after it charged, with the answer held back (`answer`). Returns the request in flight
        and whether it is held. When it is not, payments refused it before calling Stripe (the
        task is done) and the rule it did not take is dropped (`leftover="clear"`, which also
        lets every held request go), or taken by a dummy request that stays held in its place
        (`"dummy"`), so that what is held stays in the order the test held it."""
        before = await self.held()
        rule = await self.add_fault(
            hold=True, match=INTENTS, count=1, after_processing=stage == "answer"
        )
        task = asyncio.create_task(pay(user, order_id, token))

        async def held_or_answered() -> bool:
            return task.done() or await self.held() > before

        await until(held_or_answered)
        if not task.done():
            return task, True
        if leftover == "clear":
            await self.clear_faults()
            return task, False
        if not await self.rule_taken(rule):
            self.take_rule_with_a_dummy()

        async def someone_held() -> bool:
            return await self.rule_taken(rule) and await self.held() > before

        await until(someone_held)
        return task, False

    # --- the payments database ---------------------------------------------------------------

    @property
    def payments_db(self) -> Any:
        return self.mongo["payments"]

    async def attempts(self, order_id: str) -> list[dict[str, Any]]:
        """The order's payments, oldest first: payments stores them in its replica of the order
        (`attempts.<slot>`; `kept` names the slot of the one it keeps). Each comes with
        `kept`, whether it is that one."""
        replica = await self.payments_replica(order_id)
        if replica is None:
            return []
        kept = replica.get("kept")
        found = [
            {**attempt, "kept": slot == kept}
            for slot, attempt in (replica.get("attempts") or {}).items()
        ]
        return sorted(found, key=lambda a: (a["createdAt"], a["id"]))

    async def payments_replica(self, order_id: str) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = await self.payments_db["orders"].find_one(
            {"_id": ObjectId(order_id)}
        )
        return doc

    async def known_to_payments(self, order_id: str) -> bool:
        return await self.payments_replica(order_id) is not None

    async def cancelled_for_payments(self, order_id: str) -> bool:
        replica = await self.payments_replica(order_id)
        return replica is not None and replica["status"] == "cancelled"

    async def known_to_orders(self, ticket_id: str) -> bool:
        ticket = await self.mongo["orders"]["tickets"].find_one({"_id": ObjectId(ticket_id)})
        return ticket is not None

    # --- the bus ------------------------------------------------------------------------------

    async def last_seq(self) -> int:
        return int((await self.js.stream_info(STREAM)).state.last_seq)

    async def read_bus(self) -> list[dict[str, Any]]:
        """Every message on the stream so far (read once each), oldest first."""
        state = (await self.js.stream_info(STREAM)).state
        for seq in range(max(self._next_seq, state.first_seq), state.last_seq + 1):
            try:
                msg = await self.js.get_msg(STREAM, seq)
            except NotFoundError:
                continue
            if msg.data:
                self.messages.append(
                    {"seq": seq, "subject": msg.subject, "data": json.loads(msg.data)}
                )
        self._next_seq = max(self._next_seq, state.last_seq + 1)
        return self.messages

    async def events_of(self, order_id: str, subject: str) -> list[dict[str, Any]]:
        """The messages of `subject` about one order (`order.*` name it `id`, others `orderId`)."""
        field = "id" if subject.startswith("order.") else "orderId"
        return [
            m
            for m in await self.read_bus()
            if m["subject"] == subject and m["data"].get(field) == order_id
        ]

    async def consumer_past(self, durable: str, seq: int) -> bool:
        """Whether a service's durable consumer has acked everything up to stream `seq`."""
        info = await self.js.consumer_info(STREAM, durable)
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        return floor >= seq and not info.num_ack_pending

    async def consumer_tried(self, durable: str, seq: int) -> bool:
        """Whether a service's durable consumer has been handed stream `seq` (acked or not)."""
        info = await self.js.consumer_info(STREAM, durable)
        return info.delivered.stream_seq >= seq

    async def dead_letters(self) -> int:
        """How many events a service gave up on (none, in a system that works)."""
        try:
            return int((await self.js.stream_info(DEAD_LETTER_STREAM)).state.messages)
        except NotFoundError:
            return 0

    async def consumers_idle(self) -> bool:
        infos = await self.js.consumers_info(STREAM)
        return all(not c.num_pending and not c.num_ack_pending for c in infos)

    async def outboxes_empty(self) -> bool:
        for db, collection in OUTBOXES:
            if await self.mongo[db][collection].find_one({"outboxAt": {"$gt": 0}}, {"_id": 1}):
                return False
        return True

    # --- settling -----------------------------------------------------------------------------

    async def quiet(self) -> bool:
        """Nothing in flight between the services: no Stripe webhook being delivered, no event
        waiting in an outbox or in a consumer, and the stream did not move while we looked."""
        seq = await self.last_seq()
        if (await self.webhooks())["pending"]:
            return False
        if not await self.consumers_idle() or not await self.outboxes_empty():
            return False
        return await self.last_seq() == seq

    async def settled(self, order_ids: Sequence[str]) -> bool:
        """Quiet, nothing held or armed at the fake, and no payment of these orders half done:
        no attempt `pending` (the reconciler finishes those), no refund due."""
        faults = await self.faults()
        if faults["held"] or faults["faults"]:
            return False
        for order_id in order_ids:
            for attempt in await self.attempts(order_id):
                if attempt["status"] == "pending" or attempt.get("refundDue"):
                    return False
        return await self.quiet() and await self.quiet()

    async def settle(self, order_ids: Sequence[str], within: float = SETTLE_WITHIN) -> None:
        async def settled() -> bool:
            return await self.settled(order_ids)

        await until(settled, within)

    # --- the invariants -----------------------------------------------------------------------

    async def money_problems(self, order: dict[str, Any]) -> list[str]:
        """What is wrong with one order's money, by the fake's records, payments' store and the
        bus (empty: nothing). Call it once the system has settled."""
        order_id, status = order["id"], order["status"]
        problems: list[str] = []
        intents = await self.intents(order_id)
        succeeded = [i for i in intents if i["status"] == "succeeded"]
        kept = [i for i in succeeded if i["amount_refunded"] < i["amount_received"]]
        refunded = {i["id"] for i in succeeded if i["amount_refunded"] >= i["amount_received"]}
        partly = [i["id"] for i in succeeded if 0 < i["amount_refunded"] < i["amount_received"]]
        if partly:
            problems.append(f"partly refunded charges {partly}")
        cents = round(order["price"] * 100)
        if any(i["amount"] != cents for i in intents):
            problems.append(f"charged {[i['amount'] for i in intents]}, the order says {cents}")
        wanted_kept = 1 if status == "complete" else 0
        if len(kept) != wanted_kept:
            problems.append(f"{status} order with {len(kept)} kept charges {kept}")
        if order["refunded"] != bool(refunded):
            problems.append(f"refunded={order['refunded']} but charges refunded: {refunded}")
        refunds = Counter(r["payment_intent"] for r in await self.refunds(refunded))
        if any(n != 1 for n in refunds.values()) or set(refunds) != refunded:
            problems.append(f"refunds at Stripe {dict(refunds)} for refunded charges {refunded}")

        attempts = await self.attempts(order_id)
        keeping = [a for a in attempts if a["kept"]]
        if len(keeping) != wanted_kept or (kept and keeping[0].get("stripeId") != kept[0]["id"]):
            problems.append(
                f"payments keeps {[(a['id'], a.get('stripeId')) for a in keeping]} "
                f"for the charges kept at Stripe {[i['id'] for i in kept]}"
            )
        for attempt in attempts:
            stripe_id, state = attempt.get("stripeId"), attempt["status"]
            if state == "pending" or attempt.get("refundDue"):
                problems.append(f"payment {attempt['id']} left half done: {attempt}")
            if state == "succeeded" and not attempt["kept"]:
                problems.append(f"payment {attempt['id']} succeeded, neither kept nor refunded")
            if (state == "refunded") != (stripe_id in refunded):
                problems.append(f"payment {attempt['id']} is {state}, its charge {stripe_id}")

        created = await self.events_of(order_id, "payment.created")
        gone = await self.events_of(order_id, "payment.refunded")
        cancels = await self.events_of(order_id, "order.cancelled")
        for subject, events in (("payment.created", created), ("payment.refunded", gone)):
            repeats = [k for k, n in Counter(e["data"]["id"] for e in events).items() if n > 1]
            if repeats:
                problems.append(f"{subject} announced twice for {repeats}")
        live = {e["data"]["id"] for e in created} - {e["data"]["id"] for e in gone}
        wanted_live = {a["id"] for a in keeping}
        if live != wanted_live:
            problems.append(f"the bus says payments {live} stand, payments keeps {wanted_live}")
        said_refunded = {e["data"]["stripeId"] for e in gone}
        if said_refunded != refunded:
            problems.append(f"payment:refunded for {said_refunded}, refunded at Stripe {refunded}")
        if len(cancels) != (1 if status == "cancelled" else 0):
            problems.append(f"{status} order with {len(cancels)} order:cancelled events")
        if status not in ("complete", "cancelled"):
            problems.append(f"the order has not ended: {status}")
        return problems

    async def ticket_problems(self, ticket_id: str, orders: Sequence[dict[str, Any]]) -> list[str]:
        """The ticket is held by its one non-cancelled order, if any, else by none."""
        live = [o["id"] for o in orders if o["status"] != "cancelled"]
        shown = (await self.http.get(f"/api/tickets/{ticket_id}")).json()
        holder = shown.get("orderId")
        problems = []
        if len(live) > 1:
            problems.append(f"{len(live)} orders hold the ticket: {live}")
        if live and holder is None:
            problems.append(f"{UNHELD}: tickets says no order holds it, the live one is {live}")
        elif holder != (live[0] if live else None):
            problems.append(f"tickets says orderId={holder}, the live orders are {live}")
        return problems

    async def assert_money(
        self, orders: Sequence[dict[str, Any]], ticket_id: str | None = None, context: str = ""
    ) -> None:
        problems = []
        for order in orders:
            problems += [f"order {order['id']}: {p}" for p in await self.money_problems(order)]
        if ticket_id is not None:
            problems += [
                f"ticket {ticket_id}: {p}" for p in await self.ticket_problems(ticket_id, orders)
            ]
        assert not problems, "\n".join([*problems, context])

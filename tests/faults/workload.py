"""The fault suite's purchase workload: shoppers buying through the ingress, as people would,
while parts of the system are killed under them. It tallies what the clients saw, per phase."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

PASSWORD = "password"
VISA, DECLINED = "pm_card_visa", "pm_card_chargeDeclined"
# What a shopper does once an order is placed, by weight: pay, be declined then pay, cancel,
# pay and cancel at once (a payment racing a cancellation), or walk away (the order expires).
CHOICES = {"pay": 4, "decline": 2, "cancel": 2, "race": 1, "walk away": 2}
# A refused answer that is the marketplace's rule, not a failure (a declined card, an order that
# expired or was cancelled in the meantime, a ticket someone else reserved first).
EXPECTED = {400, 402, 404}


@dataclass
class Tally:
    """What the clients saw during one phase."""

    done: Counter[str] = field(default_factory=Counter)  # operations that succeeded, by kind
    errors: Counter[str] = field(default_factory=Counter)  # failures, by status or `conn`

    @property
    def operations(self) -> int:
        return sum(self.done.values())

    def error_text(self) -> str:
        return ", ".join(f"{k} x{n}" for k, n in sorted(self.errors.items())) or "none"


class Workload:
    """`shoppers` concurrent shoppers, each signing up, selling a ticket to another shopper's
    account and buying it, until `stop()`; `tally` is the current phase's."""

    def __init__(self, base_url: str, shoppers: int, seed: int) -> None:
        self.base_url = base_url
        self.shoppers = shoppers
        self.seed = seed
        self.tally = Tally()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._progress = asyncio.Event()  # set at each successful operation

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._shop(n)) for n in range(self.shoppers)]

    async def stop(self) -> None:
        self._stopping.set()
        await asyncio.gather(*self._tasks)

    def next_phase(self) -> Tally:
        """Close the phase: its tally is returned, a new one starts."""
        done, self.tally = self.tally, Tally()
        return done

    async def until_operations(self, count: int) -> None:
        """Wait until this phase has seen `count` successful operations."""
        while self.tally.operations < count:
            self._progress.clear()
            await self._progress.wait()

    # --- one shopper ----------------------------------------------------------------------------

    async def _shop(self, number: int) -> None:
        rng = random.Random(self.seed * 1000 + number)
        async with (
            httpx.AsyncClient(base_url=self.base_url, timeout=10) as seller,
            httpx.AsyncClient(base_url=self.base_url, timeout=10) as buyer,
        ):
            while not self._stopping.is_set():
                if not await self._signed_up(seller) or not await self._signed_up(buyer):
                    continue
                body = ticket_body(rng)
                ticket = await self._call("sell", seller.post, "/api/tickets", json=body)
                if ticket is None:
                    continue
                order = await self._order(buyer, ticket["id"])
                if order is not None:
                    await self._after_order(buyer, order["id"], rng)

    async def _signed_up(self, client: httpx.AsyncClient) -> bool:
        if client.cookies:
            return True
        email = f"{uuid.uuid4().hex[:12]}@faults.dev"
        body = {"email": email, "password": PASSWORD}
        return await self._call("sign up", client.post, "/api/users/signup", json=body) is not None

    async def _order(self, buyer: httpx.AsyncClient, ticket_id: str) -> dict[str, Any] | None:
        """Order the ticket once orders knows it (404 until its event arrives)."""
        while not self._stopping.is_set():
            answer = await self._request(buyer.post, "/api/orders", json={"ticketId": ticket_id})
            if answer is not None and answer.status_code == 404:
                await asyncio.sleep(0.05)  # pacing while the ticket replicates
                continue
            return self._record("order", answer)
        return None

    async def _after_order(
        self, buyer: httpx.AsyncClient, order_id: str, rng: random.Random
    ) -> None:
        choice = rng.choices(list(CHOICES), weights=list(CHOICES.values()))[0]
        pay = {"orderId": order_id, "token": VISA}
        if choice == "decline":
            declined = {**pay, "token": DECLINED}
            await self._call("declined", buyer.post, "/api/payments", json=declined)
        if choice in ("pay", "decline"):
            await self._call("pay", buyer.post, "/api/payments", json=pay)
        elif choice == "cancel":
            await self._call("cancel", buyer.delete, f"/api/orders/{order_id}")
        elif choice == "race":
            await asyncio.gather(
                self._call("pay", buyer.post, "/api/payments", json=pay),
                self._call("cancel", buyer.delete, f"/api/orders/{order_id}"),
            )

    # --- requests and their tally ---------------------------------------------------------------

    async def _call(
        self, kind: str, method: Callable[..., Awaitable[httpx.Response]], *args: Any, **kw: Any
    ) -> dict[str, Any] | None:
        return self._record(kind, await self._request(method, *args, **kw))

    async def _request(
        self, method: Callable[..., Awaitable[httpx.Response]], *args: Any, **kw: Any
    ) -> httpx.Response | None:
        """The answer, or None when there was none (counted); pauses a little after a failure,
        as a person would, rather than hammering a part that is down."""
        try:
            answer = await method(*args, **kw)
        except httpx.HTTPError:
            self.tally.errors["conn"] += 1
            await asyncio.sleep(0.2)
            return None
        if answer.status_code >= 500:
            await asyncio.sleep(0.2)
        return answer

    def _record(self, kind: str, answer: httpx.Response | None) -> dict[str, Any] | None:
        if answer is None:
            return None
        if answer.status_code < 300:
            self.tally.done[kind] += 1
            self._progress.set()
            body: dict[str, Any] = answer.json() if answer.content else {}
            return body
        if answer.status_code not in EXPECTED or kind == "sign up":
            self.tally.errors[str(answer.status_code)] += 1
        return None


def ticket_body(rng: random.Random) -> dict[str, Any]:
    return {"title": f"fault show {rng.randrange(10_000)}", "price": rng.randrange(5, 200)}

"""What the payments tests share besides fixtures: the fake Stripe's key and webhook secret, a
client of its test routes (`FakeStripe`), and helpers to arrange orders in payments' replica and
read their payments, as stored in the order's document."""

from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
from bson import ObjectId
from fastapi import FastAPI

from ticketing_common.events import OrderCreated, OrderStatus
from ticketing_payments.reconciler import reconcile as reconciler_pass
from ticketing_payments.repository import OrderReplicas

WEBHOOK_SECRET = "whsec_payments_tests_secret"
STRIPE_KEY = "sk_test_payments"


class FakeStripe:
    """The project's Stripe-compatible test-mode server, run as its own process."""

    def __init__(self, url: str) -> None:
        self.url = url

    def intents(self, order_id: str | None = None) -> list[dict]:
        """Every PaymentIntent created so far (for one order, if named), from `/_test`."""
        data = httpx.get(f"{self.url}/_test/payment_intents").json()["data"]
        return [i for i in data if order_id is None or i["metadata"].get("orderId") == order_id]

    async def _call(self, method: str, path: str, **kwargs: object) -> dict:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            response = await http.request(method, path, **kwargs)  # type: ignore[arg-type]
        response.raise_for_status()
        return response.json()

    async def refunds(self, stripe_id: str) -> list[dict]:
        data = (await self._call("GET", "/_test/refunds"))["data"]
        return [r for r in data if r["payment_intent"] == stripe_id]

    async def events(self, kind: str, stripe_id: str) -> list[dict]:
        """The Stripe events of `kind` about one PaymentIntent, oldest first."""
        data = (await self._call("GET", "/_test/events", params={"type": kind}))["data"]
        return [
            e
            for e in data
            if stripe_id in (e["data"]["object"]["id"], e["data"]["object"].get("payment_intent"))
        ]

    async def fault(self, **rule: object) -> None:
        """Arrange a fault (see fakestripe.faults.Rule): `hold`, `fail`, ..."""
        await self._call("POST", "/_test/faults", json=rule)

    async def held(self) -> int:
        """How many requests wait at a `hold` gate now."""
        return int((await self._call("GET", "/_test/faults"))["held"])

    async def release(self) -> None:
        await self._call("POST", "/_test/faults/release", json={})

    async def clear_faults(self) -> None:
        await self._call("DELETE", "/_test/faults")

    async def signed(self, event_id: str, **options: object) -> tuple[bytes, str]:
        """An event's exact body and `Stripe-Signature`, as Stripe would post it to us."""
        signed = await self._call("POST", "/_test/webhooks/sign", json={"id": event_id, **options})
        return signed["payload"].encode(), signed["signature"]

    async def refund(self, stripe_id: str) -> dict:
        """A refund made at Stripe itself (its dashboard, say), not by the service."""
        return await self._call(
            "POST",
            "/v1/refunds",
            data={"payment_intent": stripe_id},
            headers={"Authorization": f"Bearer {STRIPE_KEY}"},
        )


def stripe_settings(stripe_url: str) -> dict[str, object]:
    """What payments needs beyond the common settings: the fake for Stripe, its webhook secret,
    and a reconciler that runs when a test calls it (`reconcile`), unless a test says so."""
    return {
        "stripe_api_base": stripe_url,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "reconcile_seconds": 3600,
        "reconcile_after_seconds": 0,
    }


async def reconcile(app: FastAPI) -> Counter[str]:
    """One pass of the running app's reconciler, as its timer would run it."""
    return await reconciler_pass(app.state.runtime)


def new_id() -> str:
    return str(ObjectId())


async def add_order(
    db,
    *,
    user_id: str | None = None,
    price: float = 20,
    status: OrderStatus = OrderStatus.CREATED,
    expires_in: float = 900,
) -> dict:
    """An order in the replica, stored as the `order:created` listener stores it."""
    oid = ObjectId()
    event = OrderCreated.model_validate(
        {
            "id": str(oid),
            "version": 0,
            "status": str(OrderStatus.CREATED),
            "userId": user_id or new_id(),
            "expiresAt": datetime.now(UTC) + timedelta(seconds=expires_in),
            "ticket": {"id": new_id(), "price": price},
        }
    )
    await OrderReplicas(db).insert(event)
    if status != OrderStatus.CREATED:
        await db["orders"].update_one({"_id": oid}, {"$set": {"status": str(status)}})
    order: dict = await db["orders"].find_one({"_id": oid})
    return order


def order_payments(order: dict) -> list[dict]:
    """An order document's payments (its attempts), oldest first, each with `orderId`, its
    `slot` and `kept` (whether it is the one payment the order keeps)."""
    kept = order.get("kept")
    found = [
        {**attempt, "orderId": str(order["_id"]), "slot": slot, "kept": slot == kept}
        for slot, attempt in (order.get("attempts") or {}).items()
    ]
    return sorted(found, key=lambda p: (p["createdAt"], p["id"]))


async def payments_of(db, order_id: str | ObjectId) -> list[dict]:
    """The payments of one order, as stored in its document, oldest first (see
    `order_payments`); none when payments does not know the order."""
    order = await db["orders"].find_one({"_id": ObjectId(str(order_id))})
    return order_payments(order) if order else []


async def all_payments(db) -> list[dict]:
    """Every payment of every order in the database."""
    return [p for order in await db["orders"].find({}).to_list() for p in order_payments(order)]


async def payment_by_id(db, payment_id: str | ObjectId) -> dict | None:
    """The payment the API and events name `payment_id`, or None."""
    found = [p for p in await all_payments(db) if p["id"] == str(payment_id)]
    return found[0] if found else None


async def outboxes_drained(db) -> bool:
    """True when no order document holds an event not yet handed over to the bus."""
    return await db["orders"].count_documents({"outbox": {"$exists": True}}) == 0

"""What must hold after any fault, read from the services' own databases, the bus and the Stripe
test server's records (never from what the clients were told)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from tests.system.money import Probe

FINAL = ("complete", "cancelled")


async def documents(probe: Probe, database: str, collection: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await probe.mongo[database][collection].find({}).to_list()
    return found


async def double_holds(probe: Probe) -> list[str]:
    """No ticket is held by two orders that are not cancelled: true at every moment."""
    orders = await documents(probe, "orders", "orders")
    holders = Counter(o["ticketId"] for o in orders if o["status"] != "cancelled")
    return [f"ticket {t} held by {n} live orders" for t, n in holders.items() if n > 1]


async def settled(probe: Probe) -> bool:
    """Every order has ended (paid or cancelled), no payment is half done, nothing is in flight."""
    orders = await documents(probe, "orders", "orders")
    if any(o["status"] not in FINAL for o in orders):
        return False
    for order in await documents(probe, "payments", "orders"):
        if "pendingAt" in order or "refundDueAt" in order:
            return False
    return await probe.quiet() and await probe.quiet()


async def violations(probe: Probe) -> list[str]:
    """Every invariant, once the system has settled; empty when all hold."""
    orders = await documents(probe, "orders", "orders")
    tickets = await documents(probe, "tickets", "tickets")
    problems = await double_holds(probe)
    problems += holding(orders, tickets)
    problems += overdue(orders)
    problems += replicas(tickets, await documents(probe, "orders", "tickets"), "ticket")
    problems += replicas(orders, await documents(probe, "payments", "orders"), "order")
    for order in orders:
        view = {
            "id": str(order["_id"]),
            "status": order["status"],
            "price": order["price"],
            "refunded": bool(order.get("refunded")),
        }
        problems += [f"order {view['id']}: {p}" for p in await probe.money_problems(view)]
    if not await probe.outboxes_empty():
        problems.append("events left pending in an outbox")
    if dead := await probe.dead_letters():
        problems.append(f"{dead} dead letters")
    return problems


def holding(orders: list[dict[str, Any]], tickets: list[dict[str, Any]]) -> list[str]:
    """A reserved ticket's order is live, and a live order's ticket is reserved for it."""
    by_id = {str(o["_id"]): o for o in orders}
    problems = []
    for ticket in tickets:
        holder = ticket.get("orderId")
        if holder is not None and by_id.get(holder, {}).get("status") in (None, "cancelled"):
            problems.append(f"ticket {ticket['_id']} held by order {holder}, which is not live")
    held = {t["_id"]: t.get("orderId") for t in tickets}
    for order in orders:
        if order["status"] != "cancelled" and held.get(order["ticketId"]) != str(order["_id"]):
            problems.append(f"live order {order['_id']} does not hold its ticket")
    return problems


def overdue(orders: list[dict[str, Any]]) -> list[str]:
    """An unpaid order past its `expiresAt` is cancelled."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return [
        f"order {o['_id']} is {o['status']} past its expiry {o['expiresAt']}"
        for o in orders
        if o["status"] not in FINAL and o["expiresAt"] < now
    ]


def announced_version(source: dict[str, Any]) -> int:
    """The version of a document's last event: paying an order raises its version but sends
    none (no service follows `complete`), every other change sends one."""
    return int(source["version"]) - (source.get("status") == "complete")


def replicas(sources: list[dict[str, Any]], copies: list[dict[str, Any]], what: str) -> list[str]:
    """Each replica is at its source's last event (they all arrived, each applied once), and a
    cancelled order is cancelled in its replica too."""
    copied = {c["_id"]: c for c in copies}
    problems = []
    for source in sources:
        copy = copied.get(source["_id"])
        if copy is None:
            problems.append(f"{what} {source['_id']} never reached its replica")
            continue
        if copy["version"] != announced_version(source):
            problems.append(
                f"{what} {source['_id']} announced version {announced_version(source)}, "
                f"its replica is at {copy['version']}"
            )
        if (source.get("status") == "cancelled") != (copy.get("status") == "cancelled"):
            problems.append(
                f"{what} {source['_id']} is {source.get('status')}, "
                f"its replica {copy.get('status')}"
            )
    return problems

"""The reconciler: every `reconcile_seconds`, finish what a crash, a timeout or a lost answer
left half done, once it is older than `reconcile_after_seconds` (so no request is still on it).

- attempts still `pending`: the same Stripe call with the same key (Stripe answers with the
  same PaymentIntent, or makes it now), then settled or failed;
- payments with `refundDue`: the refund again (Stripe's idempotency makes it once).

Each repair is logged at WARNING, for an operator.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime, timedelta

from ticketing_common.runtime import Periodic, Runtime
from ticketing_payments.domain import (
    Attempt,
    Order,
    Outcome,
    attempts,
    is_refund_overdue,
    is_stale,
)
from ticketing_payments.gateway import Refused, Unavailable
from ticketing_payments.settings import Settings
from ticketing_payments.settlement import Settlement

log = logging.getLogger("ticketing.payments.reconciler")

BATCH = 100


async def reconcile(runtime: Runtime) -> Counter[str]:
    """One pass; returns what it did, by kind (`settled`, `failed`, `refunded`, ...)."""
    settings = runtime.settings
    assert isinstance(settings, Settings)
    now = datetime.now(UTC)
    before = now - timedelta(seconds=settings.reconcile_after_seconds)
    settlement = runtime.context
    assert isinstance(settlement, Settlement)
    orders = settlement.orders
    done: Counter[str] = Counter()

    async def finish_attempt(order: Order, slot: str) -> str:
        attempt = attempts(order)[slot]
        try:
            outcome = await settlement.charge(order, slot)
        except Refused as refused:
            log.warning("attempt %s (%s) failed: %s", attempt["id"], attempt["key"], refused)
            return "failed"
        except Unavailable:
            return "unavailable"
        log.warning(
            "attempt %s (%s) of order %s settled: %s",
            attempt["id"],
            attempt["key"],
            order["_id"],
            outcome.value,
        )
        return "settled" if outcome is Outcome.KEPT else f"settled-{outcome.value}"

    async def finish_refund(order: Order, slot: str) -> str:
        payment = attempts(order)[slot]
        reason = payment.get("refundReason") or "a refund was due"
        if await settlement.refund(str(order["_id"]), slot, reason):
            log.warning("refund of payment %s of order %s done", payment["id"], order["_id"])
            return "refunded"
        return "unavailable"

    def stale(attempt: Attempt) -> bool:
        return is_stale(attempt, before, now)

    def due(attempt: Attempt) -> bool:
        return is_refund_overdue(attempt, before)

    for query, test, repair in (
        (orders.pending_since, stale, finish_attempt),
        (orders.refunds_due, due, finish_refund),
    ):
        for order in await query(before, BATCH):
            for slot in [s for s, a in attempts(order).items() if test(a)]:
                try:
                    done[await repair(order, slot)] += 1
                except Exception as exc:  # one stuck payment must not hold up the others
                    log.warning("reconciling order %s failed: %r", order["_id"], exc)
                    done["errors"] += 1
    return done


def _seconds(runtime: Runtime) -> float:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    return settings.reconcile_seconds


RECONCILER = Periodic("payments-reconciler", seconds=_seconds, job=reconcile)

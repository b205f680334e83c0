"""The reconciler: every `reconcile_seconds`, finish what a crash, a timeout or a lost answer
left half done, once it is older than `reconcile_after_seconds` (so no request is still on it).

- attempts still `pending`: the same Stripe call with the same key (Stripe answers with the
  same PaymentIntent, or makes it now), then settled or failed;
- payments with `refundDue`: the refund again (Stripe's idempotency makes it once);
- kept payments whose order was never checked after keeping (`orderCheckDue`): refunded if the
  order is cancelled.

Each repair is logged at WARNING, for an operator.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from ticketing_common.mongo import Document
from ticketing_common.periodic import Periodic
from ticketing_common.runtime import Runtime
from ticketing_payments.gateway import Refused, StripeGateway, Unavailable
from ticketing_payments.settings import Settings
from ticketing_payments.settlement import Outcome, Settlement

log = logging.getLogger("ticketing.payments.reconciler")

BATCH = 100


async def reconcile(runtime: Runtime, gateway: StripeGateway) -> Counter[str]:
    """One pass; returns what it did, by kind (`settled`, `failed`, `refunded`, ...)."""
    settings = runtime.settings
    assert isinstance(settings, Settings)
    now = datetime.now(UTC)
    before = now - timedelta(seconds=settings.reconcile_after_seconds)
    settlement = Settlement(runtime.db, runtime.relay, gateway)
    payments = settlement.payments
    done: Counter[str] = Counter()

    async def each(docs: list[Document], repair: Callable[[Document], Awaitable[str]]) -> None:
        for doc in docs:
            try:
                done[await repair(doc)] += 1
            except Exception as exc:  # one stuck payment must not hold up the others
                log.warning("reconciling payment %s failed: %r", doc["_id"], exc)
                done["errors"] += 1

    async def finish_attempt(attempt: Document) -> str:
        try:
            outcome = await settlement.charge(attempt)
        except Refused as refused:
            log.warning("attempt %s (%s) failed: %s", attempt["_id"], attempt["key"], refused)
            return "failed"
        except Unavailable:
            return "unavailable"
        log.warning(
            "attempt %s (%s) of order %s settled: %s",
            attempt["_id"],
            attempt["key"],
            attempt["orderId"],
            outcome.value,
        )
        return "settled" if outcome is Outcome.KEPT else f"settled-{outcome.value}"

    async def finish_refund(payment: Document) -> str:
        reason = payment.get("refundReason") or "a refund was due"
        if await settlement.refund(payment, reason):
            log.warning("refund of payment %s of order %s done", payment["_id"], payment["orderId"])
            return "refunded"
        return "unavailable"

    async def check_order(payment: Document) -> str:
        outcome = await settlement.check_order(payment)
        if outcome is Outcome.CANCELLED:
            log.warning(
                "payment %s was kept for the cancelled order %s: refunded",
                payment["_id"],
                payment["orderId"],
            )
        return f"checked-{outcome.value}"

    await each(await payments.stale_pending(before, now, BATCH), finish_attempt)
    await each(await payments.refunds_due(before, BATCH), finish_refund)
    await each(await payments.order_checks_due(before, BATCH), check_order)
    return done


def reconciler(gateway: StripeGateway) -> Periodic:
    def seconds(runtime: Runtime) -> float:
        settings = runtime.settings
        assert isinstance(settings, Settings)
        return settings.reconcile_seconds

    async def job(runtime: Runtime) -> Counter[str]:
        return await reconcile(runtime, gateway)

    return Periodic("payments-reconciler", seconds=seconds, job=job)

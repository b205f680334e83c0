"""The overdue sweep: what `expiration:complete` would have done, for orders whose expiration
job was lost."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from ticketing_common.runtime import Periodic, Runtime
from ticketing_orders.domain import expire
from ticketing_orders.repository import Storage
from ticketing_orders.settings import Settings

# The logger the sweep had when it lived with the handlers: log filters keep finding it.
log = logging.getLogger("ticketing.orders.handlers")


def _settings(runtime: Runtime) -> Settings:
    assert isinstance(runtime.settings, Settings)
    return runtime.settings


def _storage(runtime: Runtime) -> Storage:
    assert isinstance(runtime.context, Storage)
    return runtime.context


async def cancel_overdue(runtime: Runtime) -> int:
    """Cancel unpaid orders whose expiry passed a grace ago, as `expiration:complete` would:
    a lost expiration job then costs seconds, not a ticket held forever."""
    orders = _storage(runtime).orders
    cancelled = 0
    grace = _settings(runtime).order_overdue_grace_seconds
    for order in await orders.overdue(datetime.now(UTC), grace):
        if await orders.transition(order, expire) is not None:
            log.warning("order %s was overdue: cancelled by the sweep", order["_id"])
            cancelled += 1
    return cancelled


OVERDUE_SWEEP = Periodic(
    "overdue-orders",
    seconds=lambda runtime: _settings(runtime).overdue_sweep_seconds,
    job=cancel_overdue,
)

"""What the orders service does with other services' events."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from ticketing_common.events import (
    ExpirationComplete,
    OrderStatus,
    PaymentCreated,
    PaymentRefunded,
    TicketCreated,
    TicketUpdated,
)
from ticketing_common.listener import Listener, Retry
from ticketing_common.mongo import Document, object_id
from ticketing_common.periodic import Periodic
from ticketing_common.replica import Applied, event_object_id
from ticketing_common.runtime import Runtime
from ticketing_common.service import ListenerFactory
from ticketing_orders.models import Orders, TicketReplica, expire
from ticketing_orders.settings import Settings

log = logging.getLogger("ticketing.orders.listeners")
CANCELLED = OrderStatus.CANCELLED


class TicketCreatedListener(Listener[TicketCreated]):
    """Start the replica of a new ticket; a repeat finds it there and is ignored."""

    event_type = TicketCreated

    async def handle(self, event: TicketCreated) -> None:
        await TicketReplica(self.runtime.db).insert(event)


class TicketUpdatedListener(Listener[TicketUpdated]):
    """Apply ticket changes strictly in version order; wait (redelivery) across a gap."""

    event_type = TicketUpdated

    async def handle(self, event: TicketUpdated) -> None:
        if await TicketReplica(self.runtime.db).update(event) is Applied.GAP:
            raise Retry(f"ticket {event.id} version {event.version - 1} has not arrived yet")


async def _order(orders: Orders, order_id: str) -> Document:
    """The event's order; one we never made is an error (retried, then a dead letter)."""
    oid = object_id(order_id)
    order = await orders.get(oid) if oid is not None else None
    if order is None:
        raise LookupError(f"order {order_id} not found")
    return order


class ExpirationCompleteListener(Listener[ExpirationComplete]):
    """Cancel an order nobody paid for in time; a paid or cancelled one stays as it is."""

    event_type = ExpirationComplete

    async def handle(self, event: ExpirationComplete) -> None:
        orders = Orders(self.runtime.db, self.runtime.relay)
        order = await _order(orders, event.orderId)
        await orders.transition(order, expire)


class PaymentCreatedListener(Listener[PaymentCreated]):
    """Mark the order paid; a repeat finds it complete, a cancelled order stays cancelled."""

    event_type = PaymentCreated

    async def handle(self, event: PaymentCreated) -> None:
        orders = Orders(self.runtime.db, self.runtime.relay)
        if await orders.complete(event_object_id(event.orderId)) is not None:
            return
        if (await _order(orders, event.orderId))["status"] == CANCELLED:
            log.warning("order %s paid after it was cancelled: payments refunds it", event.orderId)


class PaymentRefundedListener(Listener[PaymentRefunded]):
    """Record on the order that its payment was given back; the status stays as it is."""

    event_type = PaymentRefunded

    async def handle(self, event: PaymentRefunded) -> None:
        orders = Orders(self.runtime.db, self.runtime.relay)
        await orders.record_refund((await _order(orders, event.orderId))["_id"])


async def cancel_overdue(runtime: Runtime) -> int:
    """Cancel unpaid orders whose expiry passed a grace ago, as `expiration:complete` would:
    a lost expiration job then costs seconds, not a ticket held forever."""
    orders = Orders(runtime.db, runtime.relay)
    cancelled = 0
    grace = _settings(runtime).order_overdue_grace_seconds
    for order in await orders.overdue(datetime.now(UTC), grace):
        if await orders.transition(order, expire) is not None:
            log.warning("order %s was overdue: cancelled by the sweep", order["_id"])
            cancelled += 1
    return cancelled


def _settings(runtime: Runtime) -> Settings:
    assert isinstance(runtime.settings, Settings)
    return runtime.settings


OVERDUE_SWEEP = Periodic(
    "overdue-orders",
    seconds=lambda runtime: _settings(runtime).overdue_sweep_seconds,
    job=cancel_overdue,
)


LISTENERS: list[ListenerFactory] = [
    TicketCreatedListener,
    TicketUpdatedListener,
    ExpirationCompleteListener,
    PaymentCreatedListener,
    PaymentRefundedListener,
]

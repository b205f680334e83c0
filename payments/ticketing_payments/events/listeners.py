"""What the payments service does with the orders service's events."""

from __future__ import annotations

from ticketing_common.events import OrderCancelled, OrderCreated
from ticketing_common.listener import Listener, Retry
from ticketing_common.replica import Applied
from ticketing_common.service import ListenerFactory
from ticketing_payments.models import OrderReplicas


class OrderCreatedListener(Listener[OrderCreated]):
    """Start the replica of a new order; a repeat finds it there and is ignored."""

    event_type = OrderCreated

    async def handle(self, event: OrderCreated) -> None:
        await OrderReplicas(self.runtime.db).insert(event)


class OrderCancelledListener(Listener[OrderCancelled]):
    """Mark the order cancelled, strictly in version order; wait (redelivery) across a gap."""

    event_type = OrderCancelled

    async def handle(self, event: OrderCancelled) -> None:
        if await OrderReplicas(self.runtime.db).cancel(event) is Applied.GAP:
            raise Retry(f"order {event.id} version {event.version - 1} has not arrived yet")


LISTENERS: list[ListenerFactory] = [OrderCreatedListener, OrderCancelledListener]

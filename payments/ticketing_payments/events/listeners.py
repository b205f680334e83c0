"""What the payments service does with the orders service's events."""

from __future__ import annotations

from ticketing_common.events import OrderCancelled, OrderCreated
from ticketing_common.listener import Listener, Retry
from ticketing_common.replica import Applied
from ticketing_common.runtime import Runtime
from ticketing_common.service import ListenerFactory
from ticketing_payments.gateway import StripeGateway
from ticketing_payments.models import OrderReplicas, is_cancelled
from ticketing_payments.settlement import Settlement


class OrderCreatedListener(Listener[OrderCreated]):
    """Start the replica of a new order; a repeat finds it there and is ignored."""

    event_type = OrderCreated

    async def handle(self, event: OrderCreated) -> None:
        await OrderReplicas(self.runtime.db).insert(event)


class OrderCancelledListener(Listener[OrderCancelled]):
    """Mark the order cancelled, strictly in version order (wait, by redelivery, across a gap);
    then refund the payment the order keeps, if any. A repeat (say, after a crash between the
    two) finds the order cancelled already and still refunds."""

    event_type = OrderCancelled

    def __init__(self, runtime: Runtime, gateway: StripeGateway) -> None:
        super().__init__(runtime)
        self.gateway = gateway

    async def handle(self, event: OrderCancelled) -> None:
        settlement = Settlement(self.runtime.db, self.runtime.relay, self.gateway)
        if await settlement.orders.cancel(event) is Applied.GAP:
            raise Retry(f"order {event.id} version {event.version - 1} has not arrived yet")
        order = await settlement.orders.get(event.id)
        if order is not None and is_cancelled(order):
            # A refund Stripe does not take now stays due: the reconciler finishes it.
            await settlement.refund_kept(order)


def listeners(gateway: StripeGateway) -> list[ListenerFactory]:
    def order_cancelled(runtime: Runtime) -> OrderCancelledListener:
        return OrderCancelledListener(runtime, gateway)

    return [OrderCreatedListener, order_cancelled]

"""What the expiration service does with the orders service's events."""

from __future__ import annotations

from ticketing_common.events import OrderCreated
from ticketing_common.listener import Listener
from ticketing_common.runtime import Runtime
from ticketing_expiration.jobs import Scheduler


class OrderCreatedListener(Listener[OrderCreated]):
    """Schedule the order's expiry; a repeat finds the job there and changes nothing."""

    event_type = OrderCreated

    def __init__(self, runtime: Runtime, scheduler: Scheduler) -> None:
        super().__init__(runtime)
        self.scheduler = scheduler

    async def handle(self, event: OrderCreated) -> None:
        await self.scheduler.schedule(event.id, event.expiresAt)

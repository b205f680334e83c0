"""How the expiration service applies the orders service's events."""

from __future__ import annotations

from ticketing_common.events import OrderCreated
from ticketing_common.handlers import Handlers, handlers, on
from ticketing_expiration.jobs import Scheduler


async def schedule_expiry(event: OrderCreated, scheduler: Scheduler) -> None:
    """Schedule the order's expiry; a repeat finds the job there and changes nothing."""
    await scheduler.schedule(event.id, event.expiresAt)


HANDLERS: Handlers[Scheduler] = handlers(on(OrderCreated, schedule_expiry))

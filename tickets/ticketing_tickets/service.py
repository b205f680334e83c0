"""The tickets service, declared once: sell, list, show and edit tickets; reserve and free them
as orders come and go."""

from __future__ import annotations

from ticketing_common.runtime import Runtime
from ticketing_common.service import Service
from ticketing_tickets.events.handlers import HANDLERS
from ticketing_tickets.repository import COLLECTION, INDEXES, Tickets, listed_at_start
from ticketing_tickets.routes import tickets
from ticketing_tickets.settings import Settings


def _tickets(runtime: Runtime) -> Tickets:
    return Tickets(runtime.db, runtime.relay)


SERVICE: Service[Settings, Tickets] = Service(
    settings=Settings,
    routers=[tickets.router],
    indexes=INDEXES,
    outbox=[COLLECTION],
    resources=[listed_at_start],  # tickets stored before `listing` existed
    context=_tickets,
    handlers=HANDLERS,
)

"""The orders service, declared once: reserve a ticket as an order, list, show and cancel
orders; follow tickets, expirations and payments."""

from __future__ import annotations

from ticketing_common.service import Service
from ticketing_orders.events.handlers import HANDLERS
from ticketing_orders.repository import INDEXES, ORDERS, Storage
from ticketing_orders.routes import orders
from ticketing_orders.settings import Settings
from ticketing_orders.sweeps import OVERDUE_SWEEP

SERVICE: Service[Settings, Storage] = Service(
    settings=Settings,
    routers=[orders.router],
    indexes=INDEXES,
    outbox=[ORDERS],
    context=Storage.of,
    handlers=HANDLERS,
    periodic=[OVERDUE_SWEEP],
)

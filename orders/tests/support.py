"""What the orders tests share besides fixtures: the shape of `new_ticket`, and an order as
stored."""

from collections.abc import Awaitable, Callable
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from ticketing_common.mongo import Document

NewTicket = Callable[..., Awaitable[Document]]


async def stored_order(db: AsyncDatabase[Document], order: dict[str, Any]) -> Document:
    """The order as stored, less the outbox the relay empties in the background."""
    doc = await db["orders"].find_one({"_id": ObjectId(order["id"])})
    assert doc is not None
    return {k: v for k, v in doc.items() if k not in ("outbox", "outboxRev", "outboxAt")}

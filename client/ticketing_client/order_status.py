"""What an order's status means to the pages (payable, holding its ticket), and time to pay."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ticketing_common.events import OrderStatus

# Orders that may still be paid, while their time lasts.
PAYABLE: tuple[OrderStatus, ...] = (OrderStatus.CREATED, OrderStatus.AWAITING_PAYMENT)
# Orders that hold their ticket; a cancelled one has let it go.
HOLDING: tuple[OrderStatus, ...] = (*PAYABLE, OrderStatus.COMPLETE)


def seconds_left(expires_at: Any, now: datetime) -> int:
    """Whole seconds from `now` to an order's `expiresAt` (ISO 8601); 0 once past or unreadable."""
    try:
        deadline = datetime.fromisoformat(str(expires_at).replace("Z", "+00:00"))
    except ValueError:
        return 0
    return max(0, int((deadline - now).total_seconds()))

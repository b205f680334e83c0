"""Event handlers as functions, registered per event type (the service's message bus): each is
given the service's context (its repositories, gateways), not the whole runtime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ticketing_common.events import Event

E = TypeVar("E", bound=Event)
C = TypeVar("C")


@dataclass(frozen=True)
class Handler(Generic[E, C]):
    """How a service applies one kind of event. Events with one `key` (the aggregate they
    change; by default the event's own id) are applied one after another, in stream order."""

    apply: Callable[[E, C], Awaitable[None]]
    key: Callable[[E], str] | None = None

    def key_of(self, event: E) -> str:
        return self.key(event) if self.key is not None else event.key()


Handlers = Mapping[type[Event], Handler[Any, C]]


def on(
    event: type[E],
    apply: Callable[[E, C], Awaitable[None]],
    *,
    key: Callable[[E], str] | None = None,
) -> tuple[type[E], Handler[E, C]]:
    """One entry of a service's handlers: `handlers(on(OrderCreated, reserve), ...)`."""
    return event, Handler(apply, key)


def handlers(*entries: tuple[type[Event], Handler[Any, C]]) -> Handlers[C]:
    """A service's handlers, by event type; one per type."""
    found: dict[type[Event], Handler[Any, C]] = {}
    for event, handler in entries:
        if event in found:
            raise ValueError(f"two handlers of {event.__name__}")
        found[event] = handler
    return found

"""Group commit: calls that come while one command is in flight go out together in the next.

A lone call goes out at once, as it would alone; under load, the calls that queued behind a
command share one round trip and one server command (on the embedded server an insert of 8
documents costs a fifth of 8 inserts, client and server together). A caller's item is sent
only after it called, so it sees everything it wrote before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeAlias, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Per item: its result, or the exception its caller gets.
Outcome: TypeAlias = R | BaseException


class GroupCommit(Generic[T, R]):
    """`await batch(item)`: `run` is given the items queued so far (at most `most`) and answers
    one outcome per item, in order; one `run` at a time."""

    def __init__(
        self, run: Callable[[list[T]], Awaitable[Sequence[Outcome[R]]]], most: int = 256
    ) -> None:
        self.run = run
        self.most = most
        self._queued: list[tuple[T, asyncio.Future[R]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        answer: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queued.append((item, answer))
        if self._sender is None:
            # In the first caller's context: its trace and its counted commands hold the command.
            self._sender = asyncio.create_task(self._send())
        return await answer

    async def _send(self) -> None:
        lot: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._queued:
                # A caller gone before its item was sent (a dropped request) sends nothing.
                live = [(item, answer) for item, answer in self._queued if not answer.done()]
                lot, self._queued = live[: self.most], live[self.most :]
                if not lot:
                    continue
                try:
                    outcomes: Sequence[Outcome[R]] = await self.run([item for item, _ in lot])
                except Exception as exc:
                    outcomes = [exc] * len(lot)
                for (_, answer), outcome in zip(lot, outcomes, strict=True):
                    if answer.done():
                        continue
                    if isinstance(outcome, BaseException):
                        answer.set_exception(outcome)
                    else:
                        answer.set_result(outcome)
                lot = []
        finally:
            self._sender = None
            for _, answer in [*lot, *self._queued]:  # only when the sender was cancelled
                answer.cancel()
            self._queued = []

"""Faults on demand (`/_test/faults`), for race tests: slow, failing or held API requests."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Json = dict[str, Any]


class Rule(BaseModel):
    """What a test asks for; one rule acts on each matching request, oldest rule first."""

    model_config = ConfigDict(extra="forbid")

    # "POST /v1/payment_intents", or a path alone for any method; a path also covers the
    # paths under it. None: every `/v1` request.
    match: str | None = None
    count: int | None = Field(default=None, ge=1)  # None: until `DELETE /_test/faults`
    delay_seconds: float = Field(default=0.0, ge=0, le=600)
    hold: bool = False  # wait for `POST /_test/faults/release` (or the DELETE)
    after_processing: bool = False  # delay, hold or fail the answer instead of the request
    fail: int | None = Field(default=None, ge=400, le=599)  # answer this, in Stripe's shape
    fail_after_processing: bool = False  # process, then answer `fail` (500 by default)

    @field_validator("match")
    @classmethod
    def method_and_path(cls, match: str | None) -> str | None:
        if match is not None:
            method, _, path = match.strip().rpartition(" ")
            if not path.startswith("/") or not (method == "" or method.isalpha()):
                raise ValueError('say "METHOD /path" or "/path", e.g. "POST /v1/payment_intents"')
        return match

    @model_validator(mode="after")
    def does_something(self) -> Rule:
        if not (self.delay_seconds or self.hold or self.fail or self.fail_after_processing):
            raise ValueError("give delay_seconds, hold, fail or fail_after_processing")
        return self

    def failure(self, stage: str) -> int | None:
        """The status to answer at this stage ("request" or "answer") instead of the real one."""
        late = self.fail_after_processing or self.after_processing
        if (stage == "answer") != late:
            return None
        return self.fail or (500 if self.fail_after_processing else None)

    def matches(self, method: str, path: str) -> bool:
        if self.match is None:
            return True
        wanted_method, _, wanted_path = self.match.strip().rpartition(" ")
        if wanted_method and wanted_method.upper() != method:
            return False
        wanted_path = wanted_path.rstrip("/")
        return path == wanted_path or path.startswith(wanted_path + "/")


@dataclass
class Fault:
    """A rule in force: how many requests it may still take, how many it took."""

    id: str
    rule: Rule
    left: int | None
    applied: int = 0

    def view(self) -> Json:
        return {"id": self.id, **self.rule.model_dump(), "left": self.left, "applied": self.applied}


@dataclass
class Held:
    """A request waiting at a gate."""

    id: int
    route: str
    stage: str  # "request" (not processed yet) or "answer" (processed, answer held back)
    since: float
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    def view(self) -> Json:
        return {"id": self.id, "route": self.route, "stage": self.stage, "since": self.since}


class Faults:
    """The rules in force and the requests they hold."""

    def __init__(self) -> None:
        self.rules: list[Fault] = []
        self.held: list[Held] = []
        self._ids = itertools.count(1)

    def add(self, rule: Rule) -> Fault:
        fault = Fault(f"fault_{next(self._ids)}", rule, rule.count)
        self.rules.append(fault)
        return fault

    def take(self, method: str, path: str) -> Rule | None:
        """The rule for this request, if any, counted against its `count`."""
        for fault in self.rules:
            if fault.rule.matches(method, path):
                fault.applied += 1
                if fault.left is not None:
                    fault.left -= 1
                    if fault.left == 0:
                        self.rules.remove(fault)
                return fault.rule
        return None

    async def pause(self, rule: Rule, route: str, stage: str) -> None:
        """Delay, then hold at the gate, as the rule says for this stage."""
        if rule.after_processing != (stage == "answer"):
            return
        if rule.delay_seconds:
            await asyncio.sleep(rule.delay_seconds)
        if rule.hold:
            held = Held(next(self._ids), route, stage, time.time())
            self.held.append(held)
            try:
                await held.gate.wait()
            finally:
                if held in self.held:
                    self.held.remove(held)

    def release(self, count: int | None = None) -> int:
        """Let the oldest `count` held requests (all, by default) go on; returns how many."""
        freed = self.held[:count]
        del self.held[:count]
        for held in freed:
            held.gate.set()
        return len(freed)

    def clear(self) -> None:
        self.rules.clear()
        self.release()

    def view(self) -> Json:
        return {
            "faults": [fault.view() for fault in self.rules],
            "held": len(self.held),
            "held_requests": [held.view() for held in self.held],
        }

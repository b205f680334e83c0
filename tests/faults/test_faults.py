"""The fault suite (`make faults`): a purchase workload through the ingress of a whole stack
while each service is SIGKILLed in turn, nats-server, nx-27017 and Redis are SIGKILLed (the dev
runner restarts them), and one service is paused with SIGSTOP for longer than the ack wait.
Then the system settles and every invariant is checked on the databases, the bus and the Stripe
test server's records. It prints one row per fault and fails on any violation.

`FAULTS_SEED` picks the shoppers' choices (printed, so a failing run can be repeated)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from devstack.stack import Part, Stack, answers
from devstack.testing import start_stack
from tests.faults import invariants
from tests.faults.workload import Tally, Workload
from tests.system.money import Probe
from ticketing_common.registry import installed_services
from ticketing_testing import eventually

ACK_WAIT_SECONDS = 2
ENV = {
    # Short enough that orders left unpaid expire while the faults go on.
    "EXPIRATION_WINDOW_SECONDS": "8",
    "ORDER_OVERDUE_GRACE_SECONDS": "10",
    "LISTENER_ACK_WAIT_SECONDS": str(ACK_WAIT_SECONDS),
}
SHOPPERS = 6
# Successful operations before each fault and again once the part is back: every fault strikes
# a system under load, and the system is seen to work after it.
BEFORE, AFTER = 40, 40
BACK_WITHIN = 60.0  # a part not ready this long after its fault fails the suite
PHASE_WITHIN = 180.0
SETTLE_WITHIN = 180.0


@dataclass
class Fault:
    name: str
    target: str
    pause: bool = False


FAULTS = [
    *(Fault(f"SIGKILL {s.name}", s.name) for s in installed_services()),
    Fault("SIGKILL nats-server", "nats"),
    Fault("SIGKILL nx-27017", "mongo"),
    Fault("SIGKILL redis-server", "redis"),
    Fault(f"SIGSTOP orders {2 * ACK_WAIT_SECONDS}s (ack wait {ACK_WAIT_SECONDS}s)", "orders", True),
]


@dataclass
class Row:
    fault: str
    tally: Tally
    back_in: float
    violations: list[str] = field(default_factory=list)


def part(stack: Stack, name: str) -> Part:
    return next(p for p in stack.parts if p.name == name)


async def all_ready(stack: Stack) -> bool:
    """Every service answers its readiness probe (200) and every server its port."""
    checks = [(p.port, "/readyz" if p.kind == "service" else None) for p in stack.parts]
    results = await asyncio.gather(*(asyncio.to_thread(answers, *c) for c in checks))
    return all(results)


async def inject(stack: Stack, fault: Fault) -> float:
    """Strike; return the seconds from the strike (or the end of the pause) until every part
    is ready again, the struck one as a new process (a restart) unless it was paused."""
    target = part(stack, fault.target)
    pid = target.process.pid
    if fault.pause:
        os.kill(pid, signal.SIGSTOP)
        await asyncio.sleep(2 * ACK_WAIT_SECONDS)  # the fault itself: a pause past the ack wait
        os.kill(pid, signal.SIGCONT)
    else:
        os.kill(pid, signal.SIGKILL)
    struck = time.monotonic()

    async def back() -> bool:
        restarted = fault.pause or part(stack, fault.target).process.pid != pid
        return restarted and await all_ready(stack)

    await eventually(back, within=BACK_WITHIN)
    return time.monotonic() - struck


async def run_phase(stack: Stack, probe: Probe, workload: Workload, fault: Fault) -> Row:
    await workload.until_operations(BEFORE)
    back_in = await inject(stack, fault)
    await workload.until_operations(workload.tally.operations + AFTER)
    tally = workload.next_phase()
    return Row(fault.name, tally, back_in, await invariants.double_holds(probe))


def table(rows: list[Row], final: list[str], totals: str) -> str:
    lines = [
        "| fault | operations | client errors (status xn) | back in | violations |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.fault} | {row.tally.operations} | {row.tally.error_text()} | "
            f"{row.back_in:.1f} s | {len(row.violations)} |"
        )
    lines.append(f"| settled: every invariant ({totals}) | | | | {len(final)} |")
    return "\n".join(lines)


async def totals(probe: Probe) -> str:
    orders = await invariants.documents(probe, "orders", "orders")
    complete = sum(o["status"] == "complete" for o in orders)
    intents = (await probe.stripe.get("/_test/payment_intents")).json()["data"]
    charged = sum(i["status"] == "succeeded" for i in intents)
    refunds = len((await probe.stripe.get("/_test/refunds")).json()["data"])
    return (
        f"{len(orders)} orders, {complete} complete, {len(orders) - complete} cancelled; "
        f"{charged} charges, {refunds} refunded"
    )


async def test_every_invariant_holds_through_every_fault(tmp_path: Path) -> None:
    seed = int(os.environ.get("FAULTS_SEED") or random.randrange(1 << 16))
    print(f"\nfault suite, FAULTS_SEED={seed}")
    with start_stack(tmp_path, ENV) as stack:
        async with Probe(stack) as probe:
            workload = Workload(stack.url, SHOPPERS, seed)
            workload.start()
            rows: list[Row] = []
            try:
                await asyncio.wait_for(workload.until_operations(BEFORE), PHASE_WITHIN)
                workload.next_phase()
                for fault in FAULTS:
                    # A phase that cannot finish (a part never came back) fails, not hangs.
                    phase = run_phase(stack, probe, workload, fault)
                    rows.append(await asyncio.wait_for(phase, PHASE_WITHIN))
                    print(f"  {fault.name}: back in {rows[-1].back_in:.1f} s")
            finally:
                await workload.stop()

            async def settled() -> bool:
                return await invariants.settled(probe)

            await eventually(settled, within=SETTLE_WITHIN)
            final = await invariants.violations(probe)
            print(table(rows, final, await totals(probe)))
            problems = [v for row in rows for v in row.violations] + final
            assert not problems, "\n".join(problems[:50])

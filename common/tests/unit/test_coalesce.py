"""Coalesced reads, driven step by step: each read's load waits at a gate the test opens, and
`settle()` lets every task started so far run up to where it waits (no clock involved)."""

import asyncio
import gc

import pytest

from ticketing_common.coalesce import Coalesced


async def settle() -> None:
    """Let every runnable task reach its next wait (loads here wait only on gates)."""
    for _ in range(5):
        await asyncio.sleep(0)


class Loads:
    """A load per call, each held at its own gate; `calls` counts the database reads."""

    def __init__(self) -> None:
        self.calls = 0
        self.gates: list[asyncio.Event] = []

    def __call__(self, answer: object = None, error: Exception | None = None):
        async def load() -> object:
            self.calls += 1
            n = self.calls
            gate = asyncio.Event()
            self.gates.append(gate)
            await gate.wait()
            if error is not None:
                raise error
            return answer if answer is not None else f"read {n}"

        return load

    def open(self, n: int) -> None:
        self.gates[n].set()


async def test_reads_of_one_key_in_flight_share_one_load():
    pages, loads = Coalesced[str, object](), Loads()
    readers = [asyncio.create_task(pages.read("p1", loads())) for _ in range(10)]
    await settle()
    loads.open(0)
    assert await asyncio.gather(*readers) == ["read 1"] * 10
    assert loads.calls == 1


async def test_other_keys_are_read_apart():
    pages, loads = Coalesced[str, object](), Loads()
    first = asyncio.create_task(pages.read("p1", loads()))
    second = asyncio.create_task(pages.read("p2", loads()))
    await settle()
    loads.open(1)
    loads.open(0)
    assert (await first, await second) == ("read 1", "read 2")


async def test_a_read_after_a_write_does_not_join_a_read_begun_before_it():
    pages, loads = Coalesced[str, object](), Loads()
    before = asyncio.create_task(pages.read("p1", loads()))
    await settle()
    pages.changed()  # a write completed while the first read is in flight
    after = asyncio.create_task(pages.read("p1", loads()))
    joined = asyncio.create_task(pages.read("p1", loads()))  # joins the newer read
    await settle()
    assert loads.calls == 2
    loads.open(1)
    assert (await after, await joined) == ("read 2", "read 2")
    assert not before.done()  # the older read goes on for its own caller
    loads.open(0)
    assert await before == "read 1"


async def test_nothing_is_kept_once_a_read_is_done():
    pages, loads = Coalesced[str, object](), Loads()
    first = asyncio.create_task(pages.read("p1", loads()))
    await settle()
    loads.open(0)
    assert await first == "read 1"
    second = asyncio.create_task(pages.read("p1", loads()))
    await settle()
    loads.open(1)
    assert await second == "read 2"


async def test_a_caller_that_goes_away_does_not_cancel_the_read_of_the_others():
    pages, loads = Coalesced[str, object](), Loads()
    leaver = asyncio.create_task(pages.read("p1", loads()))
    stayer = asyncio.create_task(pages.read("p1", loads()))
    await settle()
    leaver.cancel()
    await settle()
    loads.open(0)
    assert await stayer == "read 1"
    assert leaver.cancelled()


async def test_a_failed_read_fails_every_caller_that_shared_it():
    pages, loads = Coalesced[str, object](), Loads()
    readers = [
        asyncio.create_task(pages.read("p1", loads(error=OSError("down")))) for _ in range(3)
    ]
    await settle()
    loads.open(0)
    for reader in readers:
        with pytest.raises(OSError, match="down"):
            await reader


async def test_a_failed_read_whose_callers_all_left_reports_no_unretrieved_error():
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    pages, loads = Coalesced[str, object](), Loads()
    leaver = asyncio.create_task(pages.read("p1", loads(error=OSError("down"))))
    await settle()
    leaver.cancel()
    await settle()
    loads.open(0)
    await settle()
    again = asyncio.create_task(pages.read("p1", loads()))  # a new read: the failed one is gone
    await settle()
    loads.open(1)
    assert await again == "read 2"
    del leaver, loads
    gc.collect()
    loop.set_exception_handler(None)
    assert reported == []

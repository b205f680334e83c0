"""Group commit on the embedded server: concurrent inserts and reads by id go out as one
command, and each caller still gets its own answer (its clash, its document)."""

import asyncio

import pytest
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from ticketing_common.batching import GroupCommit
from ticketing_common.mongo import Batched


async def test_concurrent_inserts_are_one_command_and_only_the_clash_fails(db, mongo_commands):
    await db.seats.create_index("seat", unique=True, sparse=True)
    batched = Batched(db.seats)
    # The eleventh clashes with the fourth; those after it are stored all the same.
    docs = [{"seat": n} for n in range(10)] + [{"seat": 3}] + [{"seat": n} for n in range(10, 20)]
    with mongo_commands.counting() as seen:
        outcomes = await asyncio.gather(
            *(batched.insert_one(doc) for doc in docs), return_exceptions=True
        )
    assert seen == ["insert"]
    assert isinstance(outcomes.pop(10), DuplicateKeyError)
    assert outcomes == [None] * 20
    stored = sorted([doc["seat"] async for doc in db.seats.find({})])
    assert stored == list(range(20))


async def test_concurrent_reads_by_id_are_one_command_each_with_its_own_document(
    db, mongo_commands
):
    ids = [ObjectId() for _ in range(5)]
    await db.seats.insert_many([{"_id": oid, "n": n} for n, oid in enumerate(ids)])
    batched = Batched(db.seats)
    missing = ObjectId()
    asked = [ids[3], missing, ids[0], ids[3]]
    with mongo_commands.counting() as seen:
        found = await asyncio.gather(*(batched.find_one(oid) for oid in asked))
    assert seen == ["find"]
    assert [doc and doc["n"] for doc in found] == [3, None, 0, 3]
    found[0]["n"] = 99  # a caller changing its copy changes no one else's
    assert found[3]["n"] == 3


async def test_a_caller_gone_before_its_lot_was_sent_sends_nothing():
    sent: list[list[str]] = []
    gate, in_flight = asyncio.Event(), asyncio.Event()

    async def run(items: list[str]) -> list[str | BaseException]:
        sent.append(items)
        in_flight.set()
        await gate.wait()
        return [item.upper() for item in items]

    batch: GroupCommit[str, str] = GroupCommit(run)
    first = asyncio.create_task(batch("a"))
    await in_flight.wait()  # "a" is in flight: what comes now waits for the next lot
    dropped, kept = asyncio.create_task(batch("b")), asyncio.create_task(batch("c"))
    await asyncio.sleep(0)
    dropped.cancel()
    gate.set()
    assert (await first, await kept) == ("A", "C")
    assert sent == [["a"], ["c"]]
    with pytest.raises(asyncio.CancelledError):
        await dropped


async def test_a_failed_command_fails_each_of_its_callers():
    async def run(items: list[int]) -> list[int | BaseException]:
        raise ConnectionError("the server went away")

    batch: GroupCommit[int, int] = GroupCommit(run)
    outcomes = await asyncio.gather(batch(1), batch(2), return_exceptions=True)
    assert [type(o) for o in outcomes] == [ConnectionError, ConnectionError]

"""The optimistic-concurrency update, on whichever MongoDB-compatible server the suite uses."""

import pytest
from pymongo.errors import DuplicateKeyError

from ticketing_common.mongo import change_versioned, connect, database, update_versioned


@pytest.fixture
async def seats(mongo_uri):
    mongo = connect(mongo_uri)
    collection = database(mongo)["seats"]
    await collection.create_index([("holder", 1)], unique=True, sparse=True)
    yield collection
    await mongo.close()


async def test_a_write_on_the_current_version_applies_and_raises_it(seats):
    created = await seats.insert_one({"version": 0})
    changed = await update_versioned(seats, created.inserted_id, 0, {"$set": {"holder": "a"}})
    assert changed is not None
    assert (changed["version"], changed["holder"]) == (1, "a")


async def test_a_write_on_a_stale_version_changes_nothing(seats):
    created = await seats.insert_one({"version": 3})
    assert await update_versioned(seats, created.inserted_id, 2, {"$set": {"holder": "a"}}) is None
    assert await seats.find_one({"_id": created.inserted_id}) == {
        "_id": created.inserted_id,
        "version": 3,
    }


async def test_a_unique_index_clash_raises_instead_of_looking_like_a_stale_version(seats):
    await seats.insert_one({"version": 0, "holder": "a"})
    other = await seats.insert_one({"version": 0})
    with pytest.raises(DuplicateKeyError):
        await update_versioned(seats, other.inserted_id, 0, {"$set": {"holder": "a"}})
    assert (await seats.find_one({"_id": other.inserted_id}))["version"] == 0


async def test_a_change_decided_on_a_stale_read_is_decided_again(seats):
    created = await seats.insert_one({"version": 0, "seen": []})
    stale = await seats.find_one({"_id": created.inserted_id})
    await seats.update_one({"_id": created.inserted_id}, {"$inc": {"version": 1}})
    decided_on = []

    def decide(doc):
        decided_on.append(doc["version"])
        return {"$set": {"holder": "a"}}

    doc, changed = await change_versioned(seats, created.inserted_id, decide, read=stale)
    assert changed and decided_on == [0, 1]
    assert (doc["version"], doc["holder"]) == (2, "a")

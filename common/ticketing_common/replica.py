"""Replicas of another service's documents, kept in step by its events, strictly by version."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from ticketing_common.mongo import Batched, Document, object_id, update_versioned


class Applied(Enum):
    APPLIED = "applied"
    STALE = "stale"  # already there, or older than what the replica holds: ignore
    GAP = "gap"  # a predecessor has not landed yet: wait (redelivery)


def event_object_id(value: str) -> ObjectId:
    """The id an event names; one that is not an ObjectId is an error (then a dead letter)."""
    oid = object_id(value)
    if oid is None:
        raise ValueError(f"id {value!r} is not an ObjectId")
    return oid


async def insert_first(collection: Batched, doc: Document) -> Applied:
    """Version 0 of a replica; a repeat finds it there."""
    try:
        await collection.insert_one(doc)
    except DuplicateKeyError:
        return Applied.STALE
    return Applied.APPLIED


async def apply_next(
    collection: AsyncCollection[Document],
    doc_id: ObjectId,
    version: int,
    update: Mapping[str, Any],
) -> Applied:
    """Version N lands only on top of N-1, so changes apply in the order their owner made them."""
    if await update_versioned(collection, doc_id, version - 1, update) is not None:
        return Applied.APPLIED
    current = await collection.find_one({"_id": doc_id}, {"version": 1})
    if current is not None and current["version"] >= version:
        return Applied.STALE
    return Applied.GAP

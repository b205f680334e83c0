"""MongoDB access: connecting, ids, indexes, versioned updates."""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, get_args

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, WriteError

from ticketing_common.batching import GroupCommit, Outcome
from ticketing_common.errors import Contention, NotFoundError

Document = dict[str, Any]
# A MongoDB update, as the domain's decisions write it: operator -> field (a dotted path) ->
# its new value (`$set`), "" (`$unset`), a step (`$inc`) or a bound (`$min`). One value type
# for every operator, so that `merge` treats them alike; the functional syntax because the
# keys start with `$`.
Update = TypedDict(
    "Update",
    {
        "$set": dict[str, object],
        "$unset": dict[str, object],
        "$inc": dict[str, object],
        "$min": dict[str, object],
    },
    total=False,
)
Operator = Literal["$set", "$unset", "$inc", "$min"]
OPERATORS: tuple[Operator, ...] = get_args(Operator)


def merge(*updates: Update) -> Update:
    """One update that does what each of `updates` does (they change different fields)."""
    merged: Update = {}
    for update in updates:
        for op in OPERATORS:
            if op in update:
                merged.setdefault(op, {}).update(update[op])
    return merged


def connect(uri: str) -> AsyncMongoClient[Document]:
    """A client that fails fast enough for a 503 and returns aware datetimes."""
    return AsyncMongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=3000)


def database(client: AsyncMongoClient[Document]) -> AsyncDatabase[Document]:
    db: AsyncDatabase[Document] = client.get_default_database()
    return db


def object_id(value: str) -> ObjectId | None:
    try:
        return ObjectId(value) if len(value) == 24 else None
    except (InvalidId, TypeError):
        return None


def require_object_id(value: str) -> ObjectId:
    """A path id that is not an ObjectId names nothing: 404."""
    oid = object_id(value)
    if oid is None:
        raise NotFoundError()
    return oid


class Batched:
    """One collection's inserts and reads by `_id`: the calls that come while one is in flight
    go out as one command (see `batching`), each caller still getting its own answer."""

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection
        self._inserts: GroupCommit[Document, None] = GroupCommit(self._insert_many)
        self._reads: GroupCommit[Any, Document | None] = GroupCommit(self._find_many)

    async def insert_one(self, doc: Document) -> None:
        """As `insert_one`: DuplicateKeyError when the document clashes on a unique index."""
        await self._inserts(doc)

    async def find_one(self, doc_id: Any) -> Document | None:
        return await self._reads(doc_id)

    async def _insert_many(self, docs: list[Document]) -> list[Outcome[None]]:
        try:
            await self.collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                raise
            failed = {error["index"]: error for error in exc.details.get("writeErrors", [])}
            return [_write_error(failed[i]) if i in failed else None for i in range(len(docs))]
        return [None] * len(docs)

    async def _find_many(self, ids: list[Any]) -> list[Outcome[Document | None]]:
        found = {doc["_id"]: doc async for doc in self.collection.find({"_id": {"$in": ids}})}
        answers: list[Outcome[Document | None]] = []
        given: set[Any] = set()
        for doc_id in ids:
            doc = found.get(doc_id)
            # Two callers of one id each get a document of their own to change.
            answers.append(copy.deepcopy(doc) if doc_id in given else doc)
            given.add(doc_id)
        return answers


def _write_error(error: Mapping[str, Any]) -> WriteError:
    """One document's error in an unordered insert, as `insert_one` would have raised it."""
    kind = DuplicateKeyError if error.get("code") == 11000 else WriteError
    return kind(error.get("errmsg", "write error"), error.get("code"), dict(error))


@dataclass(frozen=True)
class Index:
    keys: list[tuple[str, int]]
    unique: bool = False
    sparse: bool = False
    options: dict[str, Any] = field(default_factory=dict)


async def ensure_indexes(
    db: AsyncDatabase[Document], indexes: Mapping[str, Iterable[Index]]
) -> None:
    for collection, specs in indexes.items():
        for spec in specs:
            await db[collection].create_index(
                spec.keys, unique=spec.unique, sparse=spec.sparse, **spec.options
            )


async def update_versioned(
    collection: AsyncCollection[Document],
    doc_id: ObjectId,
    version: int,
    update: Mapping[str, Any],
    *,
    field: str = "version",
) -> Document | None:
    """Apply `update` only where `field` still equals `version` and raise it by one.

    Returns the updated document, or None when someone else changed it first. A write the
    server refused (a unique-index clash) raises DuplicateKeyError on every server: MongoDB
    raises it itself, while nx-27017 answers None and leaves the version where it was.
    """
    changes = {k: dict(v) for k, v in update.items()}
    changes.setdefault("$inc", {})[field] = 1
    where = {"_id": doc_id, field: version}
    result: Document | None = await collection.find_one_and_update(
        where, changes, return_document=ReturnDocument.AFTER
    )
    if result is None and await collection.find_one(where, {"_id": 1}) is not None:
        raise DuplicateKeyError(f"{collection.name} {doc_id}: the write was refused", 11000)
    return result


Decide = Callable[[Document | None], Mapping[str, Any] | None]


async def change_versioned(
    collection: AsyncCollection[Document],
    doc_id: ObjectId,
    decide: Decide,
    *,
    field: str = "version",
    read: Document | None = None,
    attempts: int = 50,
) -> tuple[Document | None, bool]:
    """Read, decide, write only if nobody wrote in between; else read again and decide again.

    Returns the document as it now is and whether this call changed it. `decide` may raise
    (to refuse the change) or return None (nothing to do); `read` saves the first read.
    """
    doc = read if read is not None else await collection.find_one({"_id": doc_id})
    for attempt in range(attempts):
        update = decide(doc)
        if update is None or doc is None:
            return doc, False
        written = await update_versioned(collection, doc_id, doc[field], update, field=field)
        if written is not None:
            return written, True
        await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        doc = await collection.find_one({"_id": doc_id})
    raise Contention(f"{collection.name} {doc_id} kept changing")

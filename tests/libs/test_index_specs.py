"""The indexes a real MongoDB gets serve exactly the queries the local store's lookups do.

Every message read is equality on a bucket field with receiver_id (the shard key):
on MongoDB each must be a prefix of one of the collection's indexes, so the query
is targeted to one shard and answered by an index scan.
"""

from __future__ import annotations

from libs.readmodels import messages as readmodel
from message_service.repository import COLLECTIONS as LEDGER_COLLECTIONS
from message_service.repository import LEDGER


def _prefixes(spec_name: str) -> set[tuple[str, ...]]:
    specs = {s.name: s for s in (*readmodel.COLLECTIONS, *LEDGER_COLLECTIONS)}
    found: set[tuple[str, ...]] = {("_id",)}
    for index in specs[spec_name].indexes:
        fields = tuple(field for field, _ in index.keys)
        found |= {fields[:n] for n in range(1, len(fields) + 1)}
    return found


def test_every_lookup_has_a_mongodb_index_with_the_shard_key_first() -> None:
    messages = _prefixes(readmodel.MESSAGES)
    assert ("receiver_id", "rb") in messages
    assert ("receiver_id", "db") in messages
    assert ("receiver_id", "db", "dseq") in messages
    ledger = _prefixes(LEDGER)
    assert ("receiver_id", "key") in ledger
    assert ("receiver_id", "message_id") in ledger


def test_sharded_collections_declare_their_shard_keys_and_lookups() -> None:
    specs = {s.name: s for s in (*readmodel.COLLECTIONS, *LEDGER_COLLECTIONS)}
    assert specs[readmodel.MESSAGES].shard_key == {"receiver_id": "hashed"}
    assert specs[readmodel.HEADS].shard_key == {"_id": "hashed"}
    assert specs[LEDGER].shard_key == {"receiver_id": "hashed"}
    assert set(specs[readmodel.MESSAGES].lookups) == {"_id", "rb", "db"}
    assert set(specs[LEDGER].lookups) == {"_id", "key", "message_id"}

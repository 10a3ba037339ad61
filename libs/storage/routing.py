"""Storage routing: which MongoDB deployment holds a receiver's data (docs/storage.md).

A receiver id (a user id or a group id) is hashed to 64 bits (BLAKE2b, stable
across processes and languages, unlike Python's `hash`) and placed by jump
consistent hash (Lamping & Veach, 2014): growing from n to n+1 shards moves
only ~1/(n+1) of the receivers, and nothing moves between old shards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

_MASK64 = (1 << 64) - 1


def key_hash(key: str) -> int:
    """A stable 64-bit hash of a routing key."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash: the bucket in [0, buckets) for a 64-bit key."""
    if buckets < 1:
        raise ValueError("jump_hash needs at least one bucket")
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


class ShardRouter(Generic[T]):
    """Maps routing keys onto an ordered list of shards (order is part of the mapping)."""

    def __init__(self, shards: Sequence[T]) -> None:
        if not shards:
            raise ValueError("a router needs at least one shard")
        self.shards = tuple(shards)

    def index_for(self, key: str) -> int:
        return jump_hash(key_hash(key), len(self.shards))

    def shard_for(self, key: str) -> T:
        return self.shards[self.index_for(key)]

    def group_by_shard(self, keys: Sequence[str]) -> dict[int, list[str]]:
        """Keys grouped by shard index, each group in input order."""
        groups: dict[int, list[str]] = {}
        for key in keys:
            groups.setdefault(self.index_for(key), []).append(key)
        return groups

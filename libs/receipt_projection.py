"""Read helpers over delivery_service's watermarks (docs/realtime.md).

delivery_service owns the watermarks: durable in its `watermarks` collection
(sharded by receiver_id), cached in Redis (`wm_delivered:<receiver>` and
`wm_read:<receiver>` hashes, see libs/contracts/keys.py) and rebuilt from
MongoDB when the `projection_ready("receipts")` sentinel is missing. Readers
(the gateway's history status and receipts endpoint) use Redis, and fall back
to MongoDB while the sentinel is missing, so a flushed cache never lies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys
from libs.storage.mongo import MongoShards

PROJECTION = "receipts"
COLLECTION = "watermarks"


@dataclass
class Watermarks:
    """The watermarks in one receiver's seq space."""

    #: reader -> delivered seq
    delivered: dict[str, int] = field(default_factory=dict)
    #: group: reader -> read seq; inbox: peer (thread) -> read seq of the inbox owner
    read: dict[str, int] = field(default_factory=dict)

    def delivered_seq(self, reader_id: str, read_field: str) -> int:
        """Read implies delivered."""
        return max(self.delivered.get(reader_id, 0), self.read.get(read_field, 0))


def document_id(kind: str, receiver_id: str, field_name: str) -> str:
    """Deterministic _id of one watermark document."""
    return f"{kind}|{receiver_id}|{field_name}"


async def watermarks_of(
    redis: Redis, keys: RedisKeys, mongo: MongoShards, receiver_ids: Iterable[str]
) -> dict[str, Watermarks]:
    """receiver_id -> Watermarks, in one Redis round trip (MongoDB if not ready)."""
    receivers = list(dict.fromkeys(receiver_ids))
    if not receivers:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.projection_ready(PROJECTION))
        for receiver_id in receivers:
            pipe.hgetall(keys.delivered_watermarks(receiver_id))
            pipe.hgetall(keys.read_watermarks(receiver_id))
        ready, *rows = await pipe.execute()
    if ready:
        return {
            receiver_id: Watermarks(
                {k: int(v) for k, v in rows[2 * i].items()},
                {k: int(v) for k, v in rows[2 * i + 1].items()},
            )
            for i, receiver_id in enumerate(receivers)
        }
    result = {receiver_id: Watermarks() for receiver_id in receivers}
    for receiver_id in receivers:
        collection = mongo.collection_for(receiver_id, COLLECTION)
        async for doc in collection.find({"receiver_id": receiver_id}):
            target = (
                result[receiver_id].delivered
                if doc["kind"] == "delivered"
                else (result[receiver_id].read)
            )
            target[doc["field"]] = int(doc["seq"])
    return result

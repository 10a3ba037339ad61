"""The only code touching delivery_service's data.

MongoDB `watermarks` (sharded by receiver_id), one document per watermark:
    {_id: "<kind>|<receiver_id>|<field>", receiver_id, kind: "delivered"|"read",
     field, reader_id, thread_id, seq}
where `field` is the reader for delivered watermarks and group reads, and the
peer (thread) for reads of an inbox. Writes are `$max` upserts (a watermark
never moves back), batched per consumer batch in unordered bulk writes.

Redis (libs/contracts/keys.py, delivery section): the watermark cache
(`wm_delivered:*`, `wm_read:*`, moved forward by a Lua max-update), the
`projection_ready("receipts")` sentinel, recent senders per receiver seq
(`seq_senders:*`, for receipt fan-out), message refs (`msg_ref:*`, for the
receipts endpoint) and direct contacts (`contacts:*`, presence peers).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pymongo import UpdateOne
from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys
from libs.contracts.messages import MessageAcceptedPayload
from libs.errors import Unavailable
from libs.group_projection import PROJECTION as GROUPS_PROJECTION
from libs.readmodels.messages import encode_ref, read_head
from libs.receipt_projection import COLLECTION, PROJECTION, document_id
from libs.storage.mongo import CollectionSpec, IndexSpec, MongoShards, bulk_update

WATERMARKS = CollectionSpec(
    name=COLLECTION,
    indexes=(IndexSpec([("receiver_id", 1), ("kind", 1), ("field", 1)], "receiver_kind_field"),),
    shard_key={"receiver_id": "hashed"},
    # The receipt projection's fallback reads a receiver's watermarks by equality.
    lookups=("_id", "receiver_id"),
)
#: Recent (seq, sender) entries kept per receiver for receipt fan-out.
SEQ_SENDERS_KEPT = 5000
MESSAGE_REF_TTL_S = 7 * 24 * 3600

# Returns the previous value; writes only when the new one is higher.
_MAX_UPDATE = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local proposed = tonumber(ARGV[2])
if proposed > current then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return current
"""


@dataclass(frozen=True, slots=True)
class WatermarkMove:
    """One watermark to move forward (already collapsed to the batch's max)."""

    kind: str  # delivered | read
    receiver_kind: str
    receiver_id: str
    reader_id: str
    thread_id: str
    seq: int

    @property
    def field(self) -> str:
        if self.kind == "delivered" or self.receiver_kind == "group":
            return self.reader_id
        return self.thread_id


@dataclass(frozen=True, slots=True)
class GroupAudience:
    """Per group message id: the members it reaches (minus its sender, minus those
    who block the sender); and the ids whose sender is still a member."""

    recipients: dict[str, list[str]]
    sender_is_member: frozenset[str]


class DeliveryRepository:
    def __init__(self, redis: Redis, keys: RedisKeys, mongo: MongoShards) -> None:
        self.redis = redis
        self.keys = keys
        self.mongo = mongo
        self._max_update = redis.register_script(_MAX_UPDATE)

    # -- recipients ----------------------------------------------------------------

    async def last_seqs(self, receiver_ids: Sequence[str]) -> dict[str, int]:
        """The highest seq known of each receiver's log (0: unknown): the newest
        message this service delivered (`seq_senders`, written before the push), else
        the receiver's head in the read model (message_service's counter, behind by at
        most its write interval)."""
        unique = list(dict.fromkeys(receiver_ids))
        if not unique:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for receiver_id in unique:
                pipe.zrevrange(self.keys.seq_senders(receiver_id), 0, 0, withscores=True)
            rows = await pipe.execute()
        known = {r: int(row[0][1]) if row else 0 for r, row in zip(unique, rows, strict=True)}
        heads = await asyncio.gather(*(read_head(self.mongo, r) for r in unique))
        for receiver_id, head in zip(unique, heads, strict=True):
            if head is not None:
                known[receiver_id] = max(known[receiver_id], int(head.get("seq", 0)))
        return known

    async def blocked_either_way(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (a, b) of `pairs` where a blocks b or b blocks a (one round trip)."""
        if not pairs:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for a, b in pairs:
                pipe.sismember(self.keys.blocks(a), b)
                pipe.sismember(self.keys.blocks(b), a)
            flags = await pipe.execute()
        return {pair for n, pair in enumerate(pairs) if flags[2 * n] or flags[2 * n + 1]}

    async def group_recipients(
        self, messages: Sequence[MessageAcceptedPayload]
    ) -> dict[str, list[str]]:
        """message_id -> members of its group minus those who block the sender."""
        return (await self.group_audience(messages)).recipients

    async def group_audience(self, messages: Sequence[MessageAcceptedPayload]) -> GroupAudience:
        """Who each group message reaches, and whether its sender is still a member.

        Two pipelined round trips for the whole batch, whatever its groups and sizes.
        """
        groups = list(dict.fromkeys(m.receiver_id for m in messages))
        if not groups:
            return GroupAudience({}, frozenset())
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(self.keys.projection_ready(GROUPS_PROJECTION))
            for group_id in groups:
                pipe.hkeys(self.keys.group_members(group_id))
            ready, *member_lists = await pipe.execute()
        if not ready:
            raise Unavailable("the groups projection is being rebuilt")
        members = dict(zip(groups, member_lists, strict=True))
        pairs = list(
            dict.fromkeys((u, m.sender_id) for m in messages for u in members[m.receiver_id])
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            for user_id, sender_id in pairs:
                pipe.sismember(self.keys.blocks(user_id), sender_id)
            flags = await pipe.execute()
        blocking = {pair for pair, flag in zip(pairs, flags, strict=True) if flag}
        return GroupAudience(
            recipients={
                m.message_id: [
                    u
                    for u in members[m.receiver_id]
                    if u != m.sender_id and (u, m.sender_id) not in blocking
                ]
                for m in messages
            },
            sender_is_member=frozenset(
                m.message_id for m in messages if m.sender_id in members[m.receiver_id]
            ),
        )

    async def current_members(self, group_ids: Sequence[str]) -> dict[str, list[str]]:
        """group_id -> member ids, from the groups projection (one round trip)."""
        groups = list(dict.fromkeys(group_ids))
        if not groups:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for group_id in groups:
                pipe.hkeys(self.keys.group_members(group_id))
            rows = await pipe.execute()
        return dict(zip(groups, rows, strict=True))

    async def remember_messages(self, messages: Sequence[MessageAcceptedPayload]) -> None:
        """Who sent which seq (receipt fan-out), message refs, direct contacts."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for m in messages:
                senders = self.keys.seq_senders(m.receiver_id)
                pipe.zadd(senders, {f"{m.seq}:{m.sender_id}": m.seq})
                pipe.set(self.keys.message_ref(m.message_id), encode_ref(m), ex=MESSAGE_REF_TTL_S)
                if m.receiver_kind == "user" and m.receiver_id != m.sender_id:
                    pipe.sadd(self.keys.contacts(m.sender_id), m.receiver_id)
                    pipe.sadd(self.keys.contacts(m.receiver_id), m.sender_id)
            for receiver_id in {m.receiver_id for m in messages}:
                pipe.zremrangebyrank(self.keys.seq_senders(receiver_id), 0, -SEQ_SENDERS_KEPT - 1)
            await pipe.execute()

    async def senders_between(self, ranges: Sequence[tuple[str, int, int]]) -> list[set[str]]:
        """For each (receiver_id, after, up_to): the senders of seqs in (after, up_to]."""
        if not ranges:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for receiver_id, after, up_to in ranges:
                pipe.zrangebyscore(self.keys.seq_senders(receiver_id), f"({after}", up_to)
            rows = await pipe.execute()
        return [{entry.split(":", 1)[1] for entry in row} for row in rows]

    # -- watermarks ----------------------------------------------------------------

    async def store_watermarks(self, moves: Iterable[WatermarkMove]) -> None:
        """Durable first: `$max` upserts, one unordered bulk write per shard."""
        by_shard: dict[int, list[UpdateOne]] = defaultdict(list)
        for move in moves:
            doc_id = document_id(move.kind, move.receiver_id, move.field)
            by_shard[self.mongo.shard_index(move.receiver_id)].append(
                UpdateOne(
                    {"_id": doc_id},
                    {
                        "$max": {"seq": move.seq},
                        "$setOnInsert": {
                            "receiver_id": move.receiver_id,
                            "kind": move.kind,
                            "field": move.field,
                            "reader_id": move.reader_id,
                            "thread_id": move.thread_id,
                        },
                    },
                    upsert=True,
                )
            )
        for shard, operations in by_shard.items():
            await bulk_update(self.mongo.databases[shard][COLLECTION], operations)

    async def cache_watermarks(self, moves: Sequence[WatermarkMove]) -> list[int]:
        """Move the Redis watermarks forward; returns each one's previous value."""
        if not moves:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for move in moves:
                key = (
                    self.keys.delivered_watermarks(move.receiver_id)
                    if move.kind == "delivered"
                    else self.keys.read_watermarks(move.receiver_id)
                )
                await self._max_update(keys=[key], args=[move.field, move.seq], client=pipe)
            return [int(v) for v in await pipe.execute()]

    async def projection_ready(self) -> bool:
        return bool(await self.redis.exists(self.keys.projection_ready(PROJECTION)))

    async def rebuild_projection(self) -> int:
        """Reload every watermark from MongoDB into Redis, then set the sentinel."""
        count = 0
        for collection in self.mongo.collections(COLLECTION):
            async with self.redis.pipeline(transaction=False) as pipe:
                async for doc in collection.find({}):
                    key = (
                        self.keys.delivered_watermarks(doc["receiver_id"])
                        if doc["kind"] == "delivered"
                        else self.keys.read_watermarks(doc["receiver_id"])
                    )
                    await self._max_update(
                        keys=[key], args=[doc["field"], int(doc["seq"])], client=pipe
                    )
                    count += 1
                await pipe.execute()
        await self.redis.set(self.keys.projection_ready(PROJECTION), "1")
        return count

"""message_service storage: the acceptance ledger, sequence counters, and the caches.

The only code touching message_service's collections and keys. Everything lives
on the receiver's shard (DESIGN.md §4):

- `accepted`: the ledger of seq assignments, `_id = "<receiver_id>:<seq>"`,
  with unique (receiver_id, seq), (receiver_id, key) and (receiver_id,
  message_id). `key` is the dedupe key `receiver|sender|client_msg_id` (or
  `receiver|id|message_id` without one), so one insert both claims the message
  and records its seq: a retry or a redelivery is recognised by a refused
  insert, never by a read on the hot path. It holds the whole accepted message,
  so a retry answers the original.
- `sequence_counters`: `_id = receiver_id`, `{seq, created_ms}` advanced with
  $max once per receiver per batch; the ledger may run ahead of it by the batch
  in hand at a crash, which `load_positions` finds by probing `_id`s forward.

Redis: the recent-messages cache of a conversation (RedisKeys.recent_messages /
recent_bodies), written here before the reply so history is read-your-writes.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError
from redis.asyncio import Redis

from libs.contracts.conversations import AppendEventPayload, ConversationEventPayload, EventView
from libs.contracts.keys import RedisKeys
from libs.contracts.messages import (
    MessageAcceptedPayload,
    MessageView,
    SendMessagePayload,
    conversation_id,
    from_millis,
    position,
    to_millis,
)
from libs.storage.mongo import CollectionSpec, IndexSpec, MongoShards, bulk_update

LEDGER = "accepted"
COUNTERS = "sequence_counters"
DUPLICATE_KEY = 11000
T = TypeVar("T")

COLLECTIONS = (
    CollectionSpec(
        LEDGER,
        indexes=(
            IndexSpec([("receiver_id", 1), ("seq", 1)], "receiver_seq", unique=True),
            IndexSpec([("receiver_id", 1), ("key", 1)], "receiver_key", unique=True),
            IndexSpec([("receiver_id", 1), ("message_id", 1)], "receiver_message", unique=True),
        ),
        shard_key={"receiver_id": "hashed"},
    ),
    CollectionSpec(COUNTERS, shard_key={"_id": "hashed"}),
)


class Outcome(enum.Enum):
    """What an ordered ledger insert did with one entry."""

    STORED = "stored"
    #: A duplicate key: the same message already has an entry, or its seq is taken.
    REFUSED = "refused"
    #: After a refused entry of the same shard: not attempted.
    UNWRITTEN = "unwritten"


def dedupe_key(receiver_id: str, sender_id: str, client_msg_id: str | None, message_id: str) -> str:
    """What makes two commands the same message for one receiver."""
    if client_msg_id:
        return f"{receiver_id}|{sender_id}|{client_msg_id}"
    return f"{receiver_id}|id|{message_id}"


@dataclass(slots=True)
class ReceiverPosition:
    """The last seq and created_at (ms) assigned to one receiver."""

    seq: int
    created_ms: int


def _ledger_id(receiver_id: str, seq: int) -> str:
    return f"{receiver_id}:{seq}"


#: What the ledger sequences: a message, or an event of a receiver's log.
LogRecord = MessageAcceptedPayload | ConversationEventPayload
#: The command behind a ledger entry.
LogCommand = SendMessagePayload | AppendEventPayload


def entry_key(command: LogCommand) -> str:
    """The dedupe key of a command (unique per receiver in the ledger)."""
    if isinstance(command, AppendEventPayload):
        return f"{command.receiver_id}|event|{command.event_id}"
    return dedupe_key(
        command.receiver_id, command.sender_id, command.client_msg_id, command.message_id
    )


def entry_id(item: LogCommand | LogRecord) -> str:
    """The id of a log entry: the message id, or the event id."""
    if isinstance(item, AppendEventPayload | ConversationEventPayload):
        return item.event_id
    return item.message_id


def stamp(command: LogCommand, seq: int, created_ms: int) -> LogRecord:
    """The record of `command` at `seq` in its receiver's log."""
    if isinstance(command, AppendEventPayload):
        return ConversationEventPayload(
            event_id=command.event_id,
            receiver_kind=command.receiver_kind,
            receiver_id=command.receiver_id,
            seq=seq,
            created_at=from_millis(created_ms),
            body=command.body,
            applies=command.applies,
        )
    return MessageAcceptedPayload(
        message_id=command.message_id,
        receiver_kind=command.receiver_kind,
        receiver_id=command.receiver_id,
        seq=seq,
        sender_id=command.sender_id,
        content=command.content,
        client_msg_id=command.client_msg_id,
        client_sent_at=command.client_sent_at,
        created_at=from_millis(created_ms),
        reply_to=command.reply_to,
    )


def ledger_document(key: str, message: LogRecord) -> dict[str, Any]:
    if isinstance(message, ConversationEventPayload):
        return {
            "_id": _ledger_id(message.receiver_id, message.seq),
            "key": key,
            "receiver_id": message.receiver_id,
            "seq": message.seq,
            # The unique (receiver_id, message_id) index holds entry ids of both kinds.
            "message_id": message.event_id,
            "entry": "event",
            "created_at": message.created_at,
            "event": message.model_dump(mode="json"),
        }
    return {
        "_id": _ledger_id(message.receiver_id, message.seq),
        "key": key,
        "receiver_id": message.receiver_id,
        "seq": message.seq,
        "message_id": message.message_id,
        "receiver_kind": message.receiver_kind,
        "sender_id": message.sender_id,
        "content": message.content,
        "client_msg_id": message.client_msg_id,
        "client_sent_at": message.client_sent_at,
        "created_at": message.created_at,
        "reply_to": message.reply_to.model_dump() if message.reply_to else None,
    }


def accepted_from_ledger(doc: dict[str, Any]) -> LogRecord:
    if doc.get("entry") == "event":
        return ConversationEventPayload.model_validate(doc["event"])
    return MessageAcceptedPayload(
        message_id=doc["message_id"],
        receiver_kind=doc["receiver_kind"],
        receiver_id=doc["receiver_id"],
        seq=doc["seq"],
        sender_id=doc["sender_id"],
        content=doc["content"],
        client_msg_id=doc.get("client_msg_id"),
        client_sent_at=doc.get("client_sent_at"),
        created_at=doc["created_at"],
        reply_to=doc.get("reply_to"),
    )


class Ledger:
    """Claims, ledger entries and counters on the receivers' shards."""

    def __init__(self, shards: MongoShards) -> None:
        self.shards = shards

    def _by_shard(self, items: Iterable[Any], receiver_of: Any) -> dict[int, list[Any]]:
        grouped: dict[int, list[Any]] = {}
        for item in items:
            grouped.setdefault(self.shards.shard_index(receiver_of(item)), []).append(item)
        return grouped

    async def originals(self, wanted: Sequence[tuple[str, str, str]]) -> dict[str, LogRecord]:
        """Ledger entries of (receiver_id, key, message_id) triples, by key and by
        message_id (rare path: retries and redeliveries; one query per shard)."""
        grouped = self._by_shard(wanted, lambda triple: triple[0])

        async def on_shard(shard: int, group: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
            query = {
                "receiver_id": {"$in": sorted({receiver for receiver, _, _ in group})},
                "$or": [
                    {"key": {"$in": [key for _, key, _ in group]}},
                    {"message_id": {"$in": [message_id for _, _, message_id in group]}},
                ],
            }
            return [doc async for doc in self.shards.databases[shard][LEDGER].find(query)]

        found = await _all_shards(on_shard(shard, group) for shard, group in grouped.items())
        originals: dict[str, LogRecord] = {}
        for part in found:
            for doc in part:
                message = accepted_from_ledger(doc)
                originals[doc["key"]] = message
                originals[doc["message_id"]] = message
        return originals

    async def load_positions(self, receiver_ids: Sequence[str]) -> dict[str, ReceiverPosition]:
        """The true last seq of each receiver: its counter, then the ledger beyond it."""
        positions = {r: ReceiverPosition(0, 0) for r in receiver_ids}
        for shard, group in self._by_shard(receiver_ids, lambda r: r).items():
            database = self.shards.databases[shard]
            async for doc in database[COUNTERS].find({"_id": {"$in": group}}):
                positions[doc["_id"]] = ReceiverPosition(
                    int(doc.get("seq", 0)), int(doc.get("created_ms", 0))
                )
            # The ledger runs ahead of the counter only after a crash between the
            # two writes: probe the next seq of every receiver in one query.
            probe = [_ledger_id(r, positions[r].seq + 1) for r in group]
            ahead = [doc async for doc in database[LEDGER].find({"_id": {"$in": probe}})]
            for doc in ahead:
                positions[doc["receiver_id"]] = await self._last_in_ledger(database, doc)
        return positions

    async def _last_in_ledger(self, database: Any, found: dict[str, Any]) -> ReceiverPosition:
        """Gallop then bisect over the ledger's contiguous seqs, starting at `found`."""
        receiver_id = found["receiver_id"]
        last = found
        step = 1
        missing: int | None = None
        while missing is None:
            doc = await database[LEDGER].find_one(
                {"_id": _ledger_id(receiver_id, last["seq"] + step)}
            )
            if doc is None:
                missing = last["seq"] + step
            else:
                last = doc
                step *= 2
        low, high = last["seq"], missing  # low exists, high does not
        while high - low > 1:
            middle = (low + high) // 2
            doc = await database[LEDGER].find_one({"_id": _ledger_id(receiver_id, middle)})
            if doc is None:
                high = middle
            else:
                low, last = middle, doc
        return ReceiverPosition(int(last["seq"]), to_millis(last["created_at"]))

    async def record(self, entries: Sequence[tuple[str, LogRecord]]) -> list[Outcome]:
        """Insert (dedupe key, message) entries: one ordered insert per shard, the
        shards at once. Per shard the entries up to the first duplicate are stored,
        that one is refused and the rest are not attempted (so a refusal never
        leaves a gap in the seqs after it)."""
        positions = self._by_shard(range(len(entries)), lambda i: entries[i][1].receiver_id)

        async def on_shard(shard: int, indexes: list[int]) -> list[tuple[int, Outcome]]:
            docs = [ledger_document(*entries[i]) for i in indexes]
            try:
                await self.shards.databases[shard][LEDGER].insert_many(docs, ordered=True)
            except BulkWriteError as exc:
                refused = _first_duplicate(exc)
                return [
                    (
                        i,
                        Outcome.STORED
                        if n < refused
                        else Outcome.REFUSED
                        if n == refused
                        else Outcome.UNWRITTEN,
                    )
                    for n, i in enumerate(indexes)
                ]
            return [(i, Outcome.STORED) for i in indexes]

        done = await _all_shards(on_shard(shard, group) for shard, group in positions.items())
        outcomes = [Outcome.UNWRITTEN] * len(entries)
        for part in done:
            for index, outcome in part:
                outcomes[index] = outcome
        return outcomes

    async def advance_counters(self, positions: dict[str, ReceiverPosition]) -> None:
        """One $max per receiver, one bulk write per shard."""
        grouped = self._by_shard(positions.items(), lambda item: item[0])
        await _all_shards(
            bulk_update(
                self.shards.databases[shard][COUNTERS],
                [
                    UpdateOne(
                        {"_id": receiver_id},
                        {"$max": {"seq": pos.seq, "created_ms": pos.created_ms}},
                        upsert=True,
                    )
                    for receiver_id, pos in group
                ],
            )
            for shard, group in grouped.items()
        )


def _first_duplicate(error: BulkWriteError) -> int:
    """The index of the entry an ordered insert stopped at; raise unless a duplicate."""
    details = error.details or {}
    errors = details.get("writeErrors", [])
    if (
        details.get("writeConcernErrors")
        or len(errors) != 1
        or errors[0].get("code") != DUPLICATE_KEY
    ):
        raise error
    return int(errors[0]["index"])


async def _all_shards(writes: Iterable[Awaitable[T]]) -> list[T]:
    """Run one write per shard concurrently; wait for all of them, then raise the first
    failure (no write of a failed batch may still be in flight when it is retried)."""
    results = await asyncio.gather(*writes, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


# KEYS: zset, bodies hash. ARGV: cap, ttl_s, n_markers, then marker pairs
# (receiver_id, position) to set if absent, then (position, body) pairs.
_CACHE_WRITE = """
local cap = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local markers = tonumber(ARGV[3])
local i = 4
for _ = 1, markers do
  redis.call('HSETNX', KEYS[2], 'from:' .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('ZADD', KEYS[1], 0, ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local size = redis.call('ZCARD', KEYS[1])
if size > cap then
  local old = redis.call('ZRANGE', KEYS[1], 0, size - cap - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, size - cap - 1)
  redis.call('HDEL', KEYS[2], unpack(old))
  local lowest = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  local fields = redis.call('HKEYS', KEYS[2])
  for _, field in ipairs(fields) do
    if string.sub(field, 1, 5) == 'from:' then
      if redis.call('HGET', KEYS[2], field) < lowest then
        redis.call('HSET', KEYS[2], field, lowest)
      end
    end
  end
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return size
"""


# KEYS: inbox zset. ARGV: message id. Rewrites the message's cached edit events
# without their content.
_PURGE_EDITS = """
local purged = 0
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  local member = entries[i]
  if string.find(member, ARGV[1], 1, true) and string.find(member, 'message_edited', 1, true) then
    local ok, data = pcall(cjson.decode, member)
    if ok and data['type'] == 'message_edited' and data['message_id'] == ARGV[1] then
      data['content'] = nil
      redis.call('ZREM', KEYS[1], member)
      redis.call('ZADD', KEYS[1], entries[i + 1], cjson.encode(data))
      purged = purged + 1
    end
  end
end
return purged
"""


def cache_body(message: MessageAcceptedPayload) -> str:
    return orjson.dumps(MessageView.of(message).stored()).decode()


def event_body(event: ConversationEventPayload) -> str:
    """An event in the per-receiver sync cache (it has a `type`; a message has none)."""
    return EventView.of(event).model_dump_json(exclude_none=True)


# KEYS: bodies hash, inbox zset. ARGV: position, seq, body, ttl_s. Replaces a cached
# message where it is cached (a message no longer cached stays uncached).
_CACHE_REWRITE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
local seq = ARGV[2]
local old = redis.call('ZRANGEBYSCORE', KEYS[2], seq, seq)
if #old > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], seq, seq)
  redis.call('ZADD', KEYS[2], seq, ARGV[3])
end
return #old
"""


class RecentCache:
    """The newest messages per conversation (history) and per receiver (sync) in Redis.

    Both bounded. A conversation's markers say what it covers; a receiver's set
    covers the seqs (min, max] when it holds max-min+1 entries (every seq is added
    in order before its reply, so it stays contiguous but after replays of old seqs).
    """

    def __init__(
        self, redis: Redis, keys: RedisKeys, *, cap: int, inbox_cap: int, ttl_s: int
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.cap = cap
        self.inbox_cap = inbox_cap
        self.ttl_s = ttl_s
        self._script = redis.register_script(_CACHE_WRITE)
        self._rewrite = redis.register_script(_CACHE_REWRITE)
        self._purge = redis.register_script(_PURGE_EDITS)

    async def add_events(self, events: Sequence[ConversationEventPayload]) -> None:
        """Add logged events to their receivers' sync cache, like messages (by seq)."""
        if not events:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for receiver_id in dict.fromkeys(e.receiver_id for e in events):
                key = self.keys.recent_inbox(receiver_id)
                pipe.zadd(
                    key, {event_body(e): e.seq for e in events if e.receiver_id == receiver_id}
                )
                pipe.zremrangebyrank(key, 0, -self.inbox_cap - 1)
                pipe.expire(key, self.ttl_s)
            await pipe.execute()

    async def rewrite_messages(self, views: Sequence[MessageView]) -> None:
        """Replace cached messages with their current state (edit, delete: the purge,
        reactions) in the conversation's history cache and the receiver's sync cache."""
        if not views:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for view in views:
                conversation = conversation_id(view.receiver.kind, view.receiver.id, view.sender_id)
                await self._rewrite(
                    keys=[
                        self.keys.recent_bodies(conversation),
                        self.keys.recent_inbox(view.receiver.id),
                    ],
                    args=[
                        position(view.created_at, view.id),
                        view.seq,
                        orjson.dumps(view.stored()).decode(),
                    ],
                    client=pipe,
                )
            await pipe.execute()

    async def purge_edits(self, deletes: Sequence[ConversationEventPayload]) -> None:
        """A message was deleted: drop the content of its edit events from the sync
        cache of the receiver whose log got the delete."""
        if not deletes:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in deletes:
                await self._purge(
                    keys=[self.keys.recent_inbox(event.receiver_id)],
                    args=[event.body.message_id or ""],
                    client=pipe,
                )
            await pipe.execute()

    async def locate(self, messages: Sequence[MessageAcceptedPayload]) -> None:
        """Where each new message is (RedisKeys.message_locator), for the gateway's
        edit, delete, reaction and reply checks; written before the reply."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for m in messages:
                pipe.set(
                    self.keys.message_locator(m.message_id),
                    f"{m.receiver_kind}|{m.receiver_id}|{m.seq}|{m.sender_id}|"
                    f"{position(m.created_at, m.message_id)}",
                    ex=self.ttl_s,
                )
            await pipe.execute()

    async def add(self, messages: Sequence[MessageAcceptedPayload], fresh: set[str]) -> None:
        """Add messages; those whose id is in `fresh` (newly sequenced) may start coverage.

        A fresh message is later than every earlier message of its receiver, so when
        a receiver's marker is absent the cache covers it from the first fresh one.
        """
        by_conversation: dict[str, list[MessageAcceptedPayload]] = {}
        by_receiver: dict[str, list[MessageAcceptedPayload]] = {}
        bodies = {m.message_id: cache_body(m) for m in messages}  # one serialization each
        for message in messages:
            by_receiver.setdefault(message.receiver_id, []).append(message)
            conversation = conversation_id(
                message.receiver_kind, message.receiver_id, message.sender_id
            )
            by_conversation.setdefault(conversation, []).append(message)
        async with self.redis.pipeline(transaction=False) as pipe:
            for conversation, group in by_conversation.items():
                first_fresh: dict[str, str] = {}
                entries: list[str] = []
                for message in group:
                    pos = position(message.created_at, message.message_id)
                    if message.message_id in fresh:
                        current = first_fresh.get(message.receiver_id)
                        if current is None or pos < current:
                            first_fresh[message.receiver_id] = pos
                    entries += [pos, bodies[message.message_id]]
                marker_args = [x for pair in first_fresh.items() for x in pair]
                await self._script(
                    keys=[
                        self.keys.recent_messages(conversation),
                        self.keys.recent_bodies(conversation),
                    ],
                    args=[self.cap, self.ttl_s, len(first_fresh), *marker_args, *entries],
                    client=pipe,
                )
            for receiver_id, group in by_receiver.items():
                key = self.keys.recent_inbox(receiver_id)
                pipe.zadd(key, {bodies[m.message_id]: m.seq for m in group})
                pipe.zremrangebyrank(key, 0, -self.inbox_cap - 1)
                pipe.expire(key, self.ttl_s)
            await pipe.execute()

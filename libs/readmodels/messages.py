"""The message read model: the one owner of stored messages, their heads and their cache.

Owns, and is the only code that spells:

- the `messages` collection (one document per message, `_id` = message_id, on
  the receiver's shard), its document shape, its indexes and lookup fields;
- the `sequence_counters` collection (the *heads*: the last seq of a receiver,
  `_id` = receiver_id, and the last direction seq of a direct direction,
  `_id` = "<receiver>><sender>"), advanced by message_service through
  `counter_updates` and read here to find the newest bucket;
- the recent-messages cache in Redis (`recent:<conv>`, `recent_body:<conv>` with
  its `from:<receiver>` coverage markers, `recent_inbox:<receiver>`): its rules,
  its writer (`RecentCache`, used by message_service before it replies) and its
  reads;
- the message ref (`msg_ref:<message_id>` -> "<kind>|<receiver>|<seq>|<sender>",
  written by delivery_service for receipts; `encode_ref`, `locate_message`) and
  issue 16's location (`msg_loc:<message_id>`, the same plus the position, written
  by message_service before its reply; `encode_location`, `read_location`);
- the `conversation_events` collection (issue 16's events of a receiver's seq
  log: edits, deletes, reactions, conversation updates; `_id` = event_id), its
  document shape and its lookup fields (`rb` like messages, `mid` = the message
  an event is about), written by the persister (persister/changes.py);
- every query of history and sync.

**Buckets.** FerretDB (the local store) can serve only top-level equality from
an index (libs/storage/sqlindexes.py), so every read here is equality on a
bucket field over a bounded set:

- `rb` = "<receiver>:<seq // 64>": 64 consecutive seqs of one receiver. Sync is
  by receiver seq, and a group's history is its seq log (created_at increases
  with seq per receiver), so both read `rb` buckets.
- `db` = "<receiver>><sender>:<dseq // 64>" on direct messages: `dseq` numbers
  the messages of one direction (sender -> receiver) 1, 2, 3... (message_service
  keeps it with the receiver's seq). A direct conversation's history merges
  its two directions, each read by `db` buckets.

A page reads one or two buckets per stream (a group, or each direction of a
direct conversation), starting from the stream's head bucket (its counter, then
forward while buckets are full), from the bucket a cursor carries, or, for a
date bound without a cursor, from the bucket a bisection over the stream's
buckets finds (log2(buckets) reads). Cursors carry, per stream, a bucket from
which reading on is safe; inserts only add higher buckets, so cursors stay
valid under concurrent sends. See docs/storage.md for each query and its plan.

**Events.** A receiver's seq log holds messages and events: sync (and the
WebSocket resume) reads a receiver's `rb` buckets from both collections (two
equality lookups per bucket) and merges them by seq, so it stays gap-free and
index-served. History pages hold messages only, in their current state: the
persister applies edits, deletes and reactions to the stored message by `_id`
(`collection`), and message_service rewrites cached bodies in place
(`RecentCache.rewrite_messages`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from libs.contracts.conversations import ConversationEventPayload, EventView
from libs.contracts.keys import RedisKeys
from libs.contracts.messages import (
    MessageAcceptedPayload,
    MessageView,
    ReceiverKind,
    conversation_id,
    position,
)
from libs.logging import get_logger
from libs.storage.mongo import CollectionSpec, IndexSpec, MongoShards
from libs.storage.redis_scripts import LuaScript, run_pipeline

log = get_logger(__name__)

MESSAGES = "messages"
EVENTS = "conversation_events"
HEADS = "sequence_counters"
BUCKET_SIZE = 64
DUPLICATE_KEY = 11000
#: Hash field prefix of a coverage marker in `recent_body:<conv>`.
MARKER_PREFIX = "from:"

COLLECTIONS = (
    CollectionSpec(
        MESSAGES,
        indexes=(
            # MongoDB: the same equality reads, targeted by the shard key's field.
            IndexSpec([("receiver_id", 1), ("rb", 1), ("seq", 1)], "receiver_bucket"),
            IndexSpec([("receiver_id", 1), ("db", 1), ("dseq", 1)], "direction_bucket"),
        ),
        shard_key={"receiver_id": "hashed"},
        lookups=("_id", "rb", "db"),
    ),
    CollectionSpec(
        EVENTS,
        indexes=(
            IndexSpec([("receiver_id", 1), ("seq", 1)], "receiver_seq", unique=True),
            IndexSpec([("receiver_id", 1), ("rb", 1), ("seq", 1)], "receiver_bucket"),
            IndexSpec([("receiver_id", 1), ("mid", 1)], "receiver_message"),
        ),
        shard_key={"receiver_id": "hashed"},
        lookups=("_id", "rb", "mid"),
    ),
    CollectionSpec(HEADS, shard_key={"_id": "hashed"}, lookups=("_id",)),
)

#: An entry of a receiver's seq log as sync returns it.
SyncEntry = MessageView | EventView


# -- document shape ---------------------------------------------------------------------


def receiver_bucket(receiver_id: str, seq: int) -> str:
    return f"{receiver_id}:{seq // BUCKET_SIZE}"


def direction_key(receiver_id: str, sender_id: str) -> str:
    """The head `_id` of a direct direction (sender -> receiver)."""
    return f"{receiver_id}>{sender_id}"


def direction_bucket(receiver_id: str, sender_id: str, dseq: int) -> str:
    return f"{direction_key(receiver_id, sender_id)}:{dseq // BUCKET_SIZE}"


def message_document(message: MessageAcceptedPayload) -> dict[str, Any]:
    """The stored form of an accepted message (insert-only; issue 16 updates by `_id`)."""
    doc: dict[str, Any] = {
        "_id": message.message_id,
        "receiver_kind": message.receiver_kind,
        "receiver_id": message.receiver_id,
        "seq": message.seq,
        "sender_id": message.sender_id,
        "content": message.content,
        "client_msg_id": message.client_msg_id,
        "client_sent_at": message.client_sent_at,
        "created_at": message.created_at,
        "reply_to": message.reply_to.model_dump() if message.reply_to else None,
        "attachments": [a.model_dump() for a in message.attachments],
        "rb": receiver_bucket(message.receiver_id, message.seq),
    }
    if message.dseq is not None:
        doc["dseq"] = message.dseq
        doc["db"] = direction_bucket(message.receiver_id, message.sender_id, message.dseq)
    return doc


def view_from_document(doc: dict[str, Any]) -> MessageView:
    """A stored `messages` document in its current state (with its reactors)."""
    deleted = bool(doc.get("deleted"))
    return MessageView.model_validate(
        {
            "id": doc["_id"],
            "seq": doc["seq"],
            "receiver": {"kind": doc["receiver_kind"], "id": doc["receiver_id"]},
            "sender_id": doc["sender_id"],
            "content": "" if deleted else doc["content"],
            "created_at": doc["created_at"],
            "client_msg_id": doc.get("client_msg_id"),
            "client_sent_at": doc.get("client_sent_at"),
            "edited_at": doc.get("edited_at"),
            "deleted": deleted,
            "reactors": {} if deleted else (doc.get("reactors") or {}),
            "reply_to": None if deleted else doc.get("reply_to"),
            "attachments": [] if deleted else (doc.get("attachments") or []),
        }
    )


def event_document(event: ConversationEventPayload) -> dict[str, Any]:
    """The stored form of a logged event (insert-only but for the purge of an edit's
    content when its message is deleted, `edits_of`)."""
    doc: dict[str, Any] = {
        "_id": event.event_id,
        "receiver_id": event.receiver_id,
        "seq": event.seq,
        "created_at": event.created_at,
        "rb": receiver_bucket(event.receiver_id, event.seq),
        "event": event.model_dump(mode="json"),
    }
    if event.body.message_id is not None:
        doc["mid"] = event.body.message_id
    return doc


def edits_of(receiver_id: str, message_id: str) -> dict[str, Any]:
    """The filter of a message's edit events in one receiver's log (`mid` equality;
    the type is filtered among those few rows)."""
    return {"receiver_id": receiver_id, "mid": message_id, "event.body.type": "message_edited"}


def event_from_document(doc: dict[str, Any]) -> EventView:
    return EventView.of(ConversationEventPayload.model_validate(doc["event"]))


def cache_body(message: MessageAcceptedPayload | MessageView) -> str:
    """A message in the caches: its view with the internal fields (`MessageView.stored`)."""
    view = message if isinstance(message, MessageView) else MessageView.of(message)
    return orjson.dumps(view.stored()).decode()


def event_body(event: ConversationEventPayload) -> str:
    """An event in the per-receiver sync cache (it has a `type`; a message has none)."""
    return EventView.of(event).model_dump_json(exclude_none=True)


def sync_entry(raw: str | bytes) -> SyncEntry:
    """An entry of the per-receiver sync cache: an event (it has a `type`) or a message."""
    data = orjson.loads(raw)
    if "type" in data:
        return EventView.model_validate(data)
    return MessageView.model_validate(data)


def receiver_of(entry: SyncEntry) -> str:
    return entry.receiver.id if isinstance(entry, MessageView) else entry.receiver["id"]


def counter_updates(
    receivers: dict[str, tuple[int, int]], directions: dict[tuple[str, str], int]
) -> dict[str, list[UpdateOne]]:
    """$max updates of heads, by the receiver they belong to (for shard routing).

    `receivers`: receiver_id -> (seq, created_ms); `directions`: (receiver, sender) -> dseq.
    """
    updates: dict[str, list[UpdateOne]] = {}
    for receiver_id, (seq, created_ms) in receivers.items():
        updates.setdefault(receiver_id, []).append(
            UpdateOne(
                {"_id": receiver_id},
                {"$max": {"seq": seq, "created_ms": created_ms}},
                upsert=True,
            )
        )
    for (receiver_id, sender_id), dseq in directions.items():
        updates.setdefault(receiver_id, []).append(
            UpdateOne(
                {"_id": direction_key(receiver_id, sender_id)}, {"$max": {"seq": dseq}}, upsert=True
            )
        )
    return updates


async def read_head(
    shards: MongoShards, receiver_id: str, sender_id: str | None = None
) -> dict[str, Any] | None:
    """The head document of a receiver (sender None) or of a direct direction."""
    key = receiver_id if sender_id is None else direction_key(receiver_id, sender_id)
    return await shards.collection_for(receiver_id, HEADS).find_one({"_id": key})


# -- writer -----------------------------------------------------------------------------


class MessageWriter:
    """Writes accepted messages to their receivers' shards (the persister's sink)."""

    def __init__(self, shards: MongoShards) -> None:
        self.shards = shards

    async def insert(self, messages: Sequence[MessageAcceptedPayload]) -> int:
        """One unordered insert per shard, concurrently; returns duplicates skipped.

        Any error but a duplicate key raises (the batch is retried, nothing is
        committed); documents that did get in are duplicates on the retry.
        """
        by_shard: dict[int, list[dict[str, Any]]] = {}
        for message in messages:
            index = self.shards.shard_index(message.receiver_id)
            by_shard.setdefault(index, []).append(message_document(message))
        counts = await asyncio.gather(
            *(self._insert_shard(index, docs) for index, docs in by_shard.items())
        )
        return sum(counts)

    async def _insert_shard(self, index: int, docs: list[dict[str, Any]]) -> int:
        try:
            await self.shards.databases[index][MESSAGES].insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            details = exc.details or {}
            errors = details.get("writeErrors", [])
            if details.get("writeConcernErrors") or any(
                e.get("code") != DUPLICATE_KEY for e in errors
            ):
                raise
            return len(errors)
        return 0


def collection(shards: MongoShards, receiver_id: str) -> AsyncCollection[dict[str, Any]]:
    """The `messages` collection holding `receiver_id`'s messages (updates by `_id` go here)."""
    return shards.collection_for(receiver_id, MESSAGES)


@dataclass(frozen=True, slots=True)
class MessageRef:
    """Where a message is: enough to route a receipt without reading the message."""

    receiver_kind: str
    receiver_id: str
    seq: int
    sender_id: str


def encode_ref(message: MessageAcceptedPayload) -> str:
    """The value of `msg_ref:<message_id>`."""
    return f"{message.receiver_kind}|{message.receiver_id}|{message.seq}|{message.sender_id}"


def decode_ref(raw: str) -> MessageRef:
    kind, receiver_id, seq, sender_id = raw.split("|", 3)
    return MessageRef(kind, receiver_id, int(seq), sender_id)


async def locate_message(
    shards: MongoShards, redis: Redis, keys: RedisKeys, message_id: str
) -> MessageRef | None:
    """A message's ref: the cached one, else the stored message (`_id` lookups)."""
    raw = await redis.get(keys.message_ref(message_id))
    if raw:
        return decode_ref(raw)
    doc = await find_message(shards, message_id)
    if doc is None:
        return None
    return MessageRef(
        str(doc.get("receiver_kind", "user")),
        str(doc["receiver_id"]),
        int(doc["seq"]),
        str(doc["sender_id"]),
    )


@dataclass(frozen=True, slots=True)
class MessageLocation:
    """Where a message is and its position: what edits, deletes, reactions and replies
    check (`msg_loc:<message_id>`, written by `RecentCache.add`)."""

    receiver_kind: str
    receiver_id: str
    seq: int
    sender_id: str
    position: str


def encode_location(message: MessageAcceptedPayload) -> str:
    """The value of `msg_loc:<message_id>`."""
    return (
        f"{message.receiver_kind}|{message.receiver_id}|{message.seq}|{message.sender_id}|"
        f"{position(message.created_at, message.message_id)}"
    )


async def read_location(redis: Redis, keys: RedisKeys, message_id: str) -> MessageLocation | None:
    """A message's cached location, else None (the caller falls back to `find_message`)."""
    raw = await redis.get(keys.message_locator(message_id))
    if not raw:
        return None
    kind, receiver_id, seq, sender_id, pos = raw.split("|", 4)
    return MessageLocation(kind, receiver_id, int(seq), sender_id, pos)


async def cached_messages(
    redis: Redis, keys: RedisKeys, wanted: Sequence[tuple[str, str]]
) -> list[MessageView | None]:
    """Messages in the history cache by (conversation id, position), one round trip;
    None where not cached."""
    if not wanted:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for conversation, pos in wanted:
            pipe.hget(keys.recent_bodies(conversation), pos)
        bodies = await pipe.execute()
    return [MessageView.model_validate_json(raw) if raw else None for raw in bodies]


async def find_message(shards: MongoShards, message_id: str) -> dict[str, Any] | None:
    """A stored message by id, on whichever shard holds it (one `_id` lookup per shard)."""
    found = await asyncio.gather(
        *(c.find_one({"_id": message_id}) for c in shards.collections(MESSAGES))
    )
    return next((doc for doc in found if doc is not None), None)


# -- conversations, bounds, pages ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation and its streams: (receiver_id, sender_id or None for a group log)."""

    id: str
    kind: ReceiverKind
    directions: tuple[tuple[str, str | None], ...]

    @classmethod
    def direct(cls, caller_id: str, other_id: str) -> Conversation:
        low, high = sorted((caller_id, other_id))
        directions: tuple[tuple[str, str | None], ...] = ((other_id, caller_id),)
        if other_id != caller_id:
            directions += ((caller_id, other_id),)
        return cls(f"d:{low}:{high}", "user", directions)

    @classmethod
    def group(cls, group_id: str) -> Conversation:
        return cls(f"g:{group_id}", "group", ((group_id, None),))


@dataclass(frozen=True, slots=True)
class Bound:
    """One end of a position range: `inclusive` says whether `position` itself is in."""

    position: str
    inclusive: bool


def in_range(pos: str, lower: Bound | None, upper: Bound | None) -> bool:
    if lower is not None and (
        pos < lower.position or (pos == lower.position and not lower.inclusive)
    ):
        return False
    return not (
        upper is not None
        and (pos > upper.position or (pos == upper.position and not upper.inclusive))
    )


def view_position(message: MessageView | EventView) -> str:
    return position(message.created_at, message.id)


@dataclass(slots=True)
class _Row:
    view: MessageView
    pos: str
    index: int  # seq (group log) or dseq (direction)


@dataclass(slots=True)
class _StreamRead:
    """What one page read of one stream: its rows and where it started."""

    key: str
    start: int
    rows: list[_Row] = field(default_factory=list)
    lowest_bucket: int = 0


@dataclass(frozen=True, slots=True)
class HistoryPage:
    messages: list[MessageView]
    has_more: bool
    #: Per stream key, the reads behind this page (for the cursors' bucket hints).
    reads: tuple[_StreamRead, ...] = ()

    def hints(self, edge: MessageView, *, downward: bool) -> dict[str, int]:
        """Per stream, a bucket from which a read past `edge` is safe.

        Downward (an older page, `before=edge`): the bucket of the stream's oldest row
        at or above the edge (older rows have lower indexes), else where it started.
        Upward (`after=edge`): the bucket of its newest row at or below the edge, else
        the lowest bucket it read.
        """
        pos = view_position(edge)
        hints: dict[str, int] = {}
        for read in self.reads:
            if downward:
                above = [r.index for r in read.rows if r.pos >= pos]
                hints[read.key] = min(above) // BUCKET_SIZE if above else read.start
            else:
                below = [r.index for r in read.rows if r.pos <= pos]
                hints[read.key] = max(below) // BUCKET_SIZE if below else read.lowest_bucket
        return hints


def stream_key(receiver_id: str, sender_id: str | None) -> str:
    return receiver_id if sender_id is None else direction_key(receiver_id, sender_id)


# -- reader -------------------------------------------------------------------------------


class MessageReader:
    """History and sync: the recent cache when it provably covers, else bucket reads."""

    def __init__(self, shards: MongoShards, redis: Redis, keys: RedisKeys) -> None:
        self.shards = shards
        self.redis = redis
        self.keys = keys

    # buckets

    async def _bucket(
        self, receiver_id: str, sender_id: str | None, number: int, slot: int | None = None
    ) -> list[_Row]:
        """One bucket of a stream by position (one equality lookup), or only its row
        with index `slot` (PostgreSQL filters the bucket's rows: one row reaches FerretDB)."""
        if number < 0:
            return []
        if sender_id is None:
            query: dict[str, Any] = {"receiver_id": receiver_id, "rb": f"{receiver_id}:{number}"}
            index_field = "seq"
        else:
            query = {
                "receiver_id": receiver_id,
                "db": f"{direction_key(receiver_id, sender_id)}:{number}",
            }
            index_field = "dseq"
        if slot is not None:
            query[index_field] = slot
        rows = []
        async for doc in collection(self.shards, receiver_id).find(query):
            view = view_from_document(doc)
            rows.append(_Row(view, view_position(view), int(doc[index_field])))
        rows.sort(key=lambda r: r.pos)
        return rows

    async def _head_bucket(self, receiver_id: str, sender_id: str | None) -> int:
        head = await read_head(self.shards, receiver_id, sender_id)
        return int(head.get("seq", 0)) // BUCKET_SIZE if head else 0

    async def _top_bucket(self, receiver_id: str, sender_id: str | None) -> int:
        """The newest bucket that may hold rows: the head's, then on while a bucket's last
        slot is stored (a head lags by at most message_service's counter interval)."""
        number = await self._head_bucket(receiver_id, sender_id)
        while await self._ends_bucket(receiver_id, sender_id, number):
            number += 1
        return number

    async def _ends_bucket(
        self,
        receiver_id: str,
        sender_id: str | None,
        number: int,
        rows: Sequence[_Row] | None = None,
    ) -> bool:
        """Whether a bucket's last slot is stored (so the next bucket may hold rows).

        `rows`: the bucket's message rows when already read (None: look the slot up).
        In a receiver's seq log (sender None) the slot may hold an event (issue 16),
        looked up in `conversation_events` by the same bucket (one row)."""
        last = (number + 1) * BUCKET_SIZE - 1
        if rows is not None:
            if _full(rows, number):
                return True
        elif await self._bucket(receiver_id, sender_id, number, last):
            return True
        if sender_id is not None:
            return False
        event = await self.shards.collection_for(receiver_id, EVENTS).find_one(
            {"receiver_id": receiver_id, "rb": receiver_bucket(receiver_id, last), "seq": last}
        )
        return event is not None

    async def _bisect(self, receiver_id: str, sender_id: str | None, bound: Bound) -> int:
        """The highest bucket whose first row is below `bound` (0 if none): log2(buckets)
        lookups of one row each (a bucket's first slot)."""
        low, high = 0, await self._top_bucket(receiver_id, sender_id)
        while low < high:
            middle = (low + high + 1) // 2
            rows = await self._bucket(receiver_id, sender_id, middle, middle * BUCKET_SIZE)
            if not rows:  # the first slot is missing (reused after a crash): the whole bucket
                rows = await self._bucket(receiver_id, sender_id, middle)
            if rows and rows[0].pos < bound.position:
                low = middle
            else:
                high = middle - 1
        return low

    async def _start(
        self,
        receiver_id: str,
        sender_id: str | None,
        lower: Bound | None,
        upper: Bound | None,
        ascending: bool,
        hint: int | None,
    ) -> int:
        """The bucket a stream's read begins at."""
        if hint is not None:
            return hint
        if ascending:
            return await self._bisect(receiver_id, sender_id, lower) if lower else 0
        if upper is not None:
            return await self._bisect(receiver_id, sender_id, upper)
        return await self._top_bucket(receiver_id, sender_id)

    async def _read_streams(
        self,
        conversation: Conversation,
        lower: Bound | None,
        upper: Bound | None,
        want: int,
        ascending: bool,
        hints: dict[str, int],
    ) -> list[_StreamRead]:
        """Bucket by bucket, always from the stream whose frontier is nearest the cursor
        side, until `want` rows in range are certain (no unread row can come before
        them) or every stream is exhausted: a quiet direction costs one bucket read."""
        streams = conversation.directions
        starts = await asyncio.gather(
            *(
                self._start(r, s, lower, upper, ascending, hints.get(stream_key(r, s)))
                for r, s in streams
            )
        )
        reads = [
            _StreamRead(stream_key(r, s), start, lowest_bucket=start)
            for (r, s), start in zip(streams, starts, strict=True)
        ]
        following = list(starts)
        #: Descending: the lowest position read per stream; ascending: the highest.
        frontier: list[str | None] = [None] * len(streams)
        done = [False] * len(streams)

        async def advance(i: int) -> None:
            receiver_id, sender_id = streams[i]
            number = following[i]
            rows = await self._bucket(receiver_id, sender_id, number)
            read = reads[i]
            read.rows.extend(rows)
            read.lowest_bucket = min(read.lowest_bucket, number)
            if rows:
                frontier[i] = rows[-1].pos if ascending else rows[0].pos
            if ascending:
                following[i] = number + 1
                done[i] = (
                    bool(rows) and upper is not None and rows[-1].pos >= upper.position
                ) or not await self._ends_bucket(receiver_id, sender_id, number, rows)
            else:
                following[i] = number - 1
                done[i] = following[i] < 0 or (
                    lower is not None and bool(rows) and rows[0].pos <= lower.position
                )

        await asyncio.gather(*(advance(i) for i in range(len(streams))))
        while not all(done):
            open_ = [i for i in range(len(streams)) if not done[i]]
            # A stream that has shown no row yet may hold anything: it goes first.
            unknown = [i for i in open_ if frontier[i] is None]
            if unknown:
                await asyncio.gather(*(advance(i) for i in unknown))
                continue
            edges = [frontier[i] or "" for i in open_]
            bar = min(edges) if ascending else max(edges)
            certain = sum(
                1
                for read in reads
                for row in read.rows
                if in_range(row.pos, lower, upper)
                and (row.pos <= bar if ascending else row.pos >= bar)
            )
            if certain >= want:
                break
            pick = min if ascending else max
            await advance(pick(open_, key=lambda i: frontier[i] or ""))
        return reads

    # history

    async def history(
        self,
        conversation: Conversation,
        *,
        lower: Bound | None,
        upper: Bound | None,
        limit: int,
        ascending: bool,
        hints: dict[str, int] | None = None,
    ) -> HistoryPage:
        """The `limit` messages of [lower, upper] nearest to the cursor side, newest first.

        `ascending=False` (before/default): the newest ones below `upper`.
        `ascending=True` (after): the oldest ones above `lower`.
        """
        cached, complete, covered = await self._from_cache(
            conversation, lower, upper, limit, ascending
        )
        if covered and complete:
            return _page(cached, limit, ascending)
        reads = await self._read_streams(
            conversation, lower, upper, limit + 1, ascending, hints or {}
        )
        merged = {m.id: m for m in cached if in_range(view_position(m), lower, upper)}
        for read in reads:
            for row in read.rows:
                if in_range(row.pos, lower, upper):
                    merged.setdefault(row.view.id, row.view)
        page = _page(list(merged.values()), limit, ascending)
        return HistoryPage(page.messages, page.has_more, tuple(reads))

    async def _from_cache(
        self,
        conversation: Conversation,
        lower: Bound | None,
        upper: Bound | None,
        limit: int,
        ascending: bool,
    ) -> tuple[list[MessageView], bool, bool]:
        """(cached messages in range, all bodies present, the cache covers the page)."""
        zset = self.keys.recent_messages(conversation.id)
        bodies = self.keys.recent_bodies(conversation.id)
        markers = [f"{MARKER_PREFIX}{receiver}" for receiver, _ in conversation.directions]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(zset)
            pipe.hmget(bodies, markers)
            if ascending:
                pipe.zrangebylex(
                    zset, _lex(lower, lower=True), _lex(upper, lower=False), 0, limit + 1
                )
            else:
                pipe.zrevrangebylex(
                    zset, _lex(upper, lower=False), _lex(lower, lower=True), 0, limit + 1
                )
            exists, marker_values, positions = await pipe.execute()
        cached: list[MessageView] = []
        if positions:
            raw_bodies = await self.redis.hmget(bodies, positions)
            cached = _unique(MessageView.model_validate_json(raw) for raw in raw_bodies if raw)
        complete = len(cached) == len(positions)
        covered_from = (
            max(marker_values) if exists and marker_values and all(marker_values) else None
        )
        if covered_from is None:
            return cached, complete, False
        start = lower.position if lower is not None else None
        if ascending:
            covered = start is not None and start >= covered_from
        else:
            inside = sum(1 for m in cached if view_position(m) >= covered_from)
            covered = inside >= limit + 1 or (start is not None and start >= covered_from)
        return cached, complete, covered

    # sync

    async def sync(
        self,
        receivers: Sequence[str],
        seqs: dict[str, int],
        limit: int,
        *,
        hidden_actors: Iterable[str] = (),
    ) -> tuple[list[SyncEntry], dict[str, int], bool]:
        """Entries (messages and events) after `seqs` across `receivers`, oldest first;
        the advanced seqs; more?

        Per receiver, the recent-inbox cache answers when it holds every seq after the
        cursor (contiguous and starting at or before cursor + 1); otherwise the
        receiver's `rb` buckets of both collections from the cursor's on, merged by
        seq, stopping at the first seq not stored yet (so nothing is skipped).
        Events of an actor in `hidden_actors` (those the caller blocks) are left out,
        but the cursor moves past them, so the log stays gap-free.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            for receiver_id in receivers:
                key = self.keys.recent_inbox(receiver_id)
                pipe.zcard(key)
                pipe.zrange(key, 0, 0, withscores=True)
                pipe.zrange(key, -1, -1, withscores=True)
                pipe.zrangebyscore(key, f"({seqs.get(receiver_id, 0)}", "+inf", 0, limit + 1)
            raw = await pipe.execute()

        async def one(index: int, receiver_id: str) -> tuple[list[SyncEntry], bool]:
            after = seqs.get(receiver_id, 0)
            size, lowest, highest, entries = raw[4 * index : 4 * index + 4]
            if size and lowest and highest:
                low, high = int(lowest[0][1]), int(highest[0][1])
                if high - low + 1 == size and low <= after + 1:
                    run = [sync_entry(entry) for entry in entries]
                    return run[:limit], len(run) > limit
            return await self._sync_stored(receiver_id, after, limit)

        results = await asyncio.gather(*(one(i, r) for i, r in enumerate(receivers)))
        candidates = [m for run, _ in results for m in run]
        candidates.sort(key=view_position)
        page = candidates[:limit]
        more = len(candidates) > limit or any(more for _, more in results)
        advanced = dict(seqs)
        for entry in page:
            receiver_id = receiver_of(entry)
            advanced[receiver_id] = max(advanced.get(receiver_id, 0), entry.seq)
        hidden = set(hidden_actors)
        if hidden:
            page = [e for e in page if not (isinstance(e, EventView) and e.actor_id in hidden)]
        return page, advanced, more

    async def _log_bucket(self, receiver_id: str, number: int) -> list[tuple[int, SyncEntry]]:
        """One `rb` bucket of a receiver's seq log: its messages and its events (one
        equality lookup on each collection), by seq."""
        if number < 0:
            return []
        query = {"receiver_id": receiver_id, "rb": f"{receiver_id}:{number}"}
        messages = self.shards.collection_for(receiver_id, MESSAGES)
        events = self.shards.collection_for(receiver_id, EVENTS)
        found_messages, found_events = await asyncio.gather(
            messages.find(query).to_list(None), events.find(query).to_list(None)
        )
        entries: list[tuple[int, SyncEntry]] = [
            (int(doc["seq"]), view_from_document(doc)) for doc in found_messages
        ]
        entries += [(int(doc["seq"]), event_from_document(doc)) for doc in found_events]
        entries.sort(key=lambda pair: pair[0])
        return entries

    async def _sync_stored(
        self, receiver_id: str, after: int, limit: int
    ) -> tuple[list[SyncEntry], bool]:
        """The contiguous run of stored seqs after `after`, bucket by bucket."""
        run: list[SyncEntry] = []
        number = (after + 1) // BUCKET_SIZE
        while len(run) <= limit:
            entries = await self._log_bucket(receiver_id, number)
            for seq, entry in entries:
                if seq <= after + len(run):
                    continue
                if seq != after + len(run) + 1:
                    return run[:limit], False  # the next seq is not stored yet
                run.append(entry)
            if not entries or entries[-1][0] != (number + 1) * BUCKET_SIZE - 1:
                break
            number += 1
        return run[:limit], len(run) > limit


def _full(rows: Sequence[_Row], number: int) -> bool:
    """Whether a bucket holds its last slot (so the next bucket may hold rows)."""
    return any(r.index == (number + 1) * BUCKET_SIZE - 1 for r in rows)


def _lex(bound: Bound | None, *, lower: bool) -> str:
    if bound is None:
        return "-" if lower else "+"
    return ("[" if bound.inclusive else "(") + bound.position


def _unique(messages: Iterable[MessageView]) -> list[MessageView]:
    """One entry per message id (the cache is keyed by position, not by id)."""
    seen: set[str] = set()
    unique: list[MessageView] = []
    for message in messages:
        if message.id in seen:
            log.warning("history anomaly", kind="message cached at two positions", id=message.id)
            continue
        seen.add(message.id)
        unique.append(message)
    return unique


def _page(messages: Sequence[MessageView], limit: int, ascending: bool) -> HistoryPage:
    ordered = sorted(messages, key=view_position, reverse=not ascending)
    page = ordered[:limit]
    if ascending:
        page.reverse()
    return HistoryPage(page, has_more=len(ordered) > limit)


# -- the recent-messages cache (written by message_service before it replies) ------------

# KEYS: zset, bodies hash. ARGV: cap, ttl_s, n_markers, then marker pairs
# (receiver_id, position) to set if absent, then (position, body) pairs.
_CACHE_WRITE = LuaScript("""
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
""")

# KEYS: bodies hash, inbox zset. ARGV: position, seq, body. Replaces a cached body
# where one is cached (edit, delete: the purge, reactions); never adds one (so
# coverage rules are untouched).
_CACHE_REPLACE = LuaScript("""
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
local old = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[2], ARGV[2])
if #old > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], ARGV[2], ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
end
return #old
""")

# KEYS: inbox zset. ARGV: message id. Rewrites the message's cached edit events
# without their content.
_PURGE_EDITS = LuaScript("""
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
""")


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

    async def add(self, messages: Sequence[MessageAcceptedPayload], fresh: set[str]) -> None:
        """Add messages, and where each is (RedisKeys.message_locator), in one round trip.

        Those whose id is in `fresh` (newly sequenced) may start coverage: a fresh
        message is later than every earlier message of its receiver, so when a
        receiver's marker is absent the cache covers it from the first fresh one.

        The locator, with the message's position, is for the gateway's edit, delete,
        reaction and reply checks (gateway/message_access.py): written before the
        send's reply, so a message can be changed the moment its send is answered.
        The `msg_ref` (`encode_ref`) is delivery_service's lighter form for receipts.
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

        def build(pipe: Pipeline) -> None:
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
                _CACHE_WRITE.queue(
                    pipe,
                    [
                        self.keys.recent_messages(conversation),
                        self.keys.recent_bodies(conversation),
                    ],
                    [self.cap, self.ttl_s, len(first_fresh), *marker_args, *entries],
                )
            for receiver_id, group in by_receiver.items():
                key = self.keys.recent_inbox(receiver_id)
                pipe.zadd(key, {bodies[m.message_id]: m.seq for m in group})
                pipe.zremrangebyrank(key, 0, -self.inbox_cap - 1)
                pipe.expire(key, self.ttl_s)
            for m in messages:
                pipe.set(self.keys.message_locator(m.message_id), encode_location(m), ex=self.ttl_s)

        if messages:
            await run_pipeline(self.redis, build, [_CACHE_WRITE])

    async def replace(self, view: MessageView) -> None:
        """Replace one message's cached body in place; absent entries stay absent."""
        await self.rewrite_messages([view])

    async def rewrite_messages(self, views: Sequence[MessageView]) -> None:
        """Replace cached messages with their current state (edit, delete: the purge,
        reactions) in the conversation's history cache and the receiver's sync cache;
        a message no longer cached stays uncached."""
        if not views:
            return

        def build(pipe: Pipeline) -> None:
            for view in views:
                conversation = conversation_id(view.receiver.kind, view.receiver.id, view.sender_id)
                _CACHE_REPLACE.queue(
                    pipe,
                    [
                        self.keys.recent_bodies(conversation),
                        self.keys.recent_inbox(view.receiver.id),
                    ],
                    [view_position(view), view.seq, cache_body(view)],
                )

        await run_pipeline(self.redis, build, [_CACHE_REPLACE])

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

    async def purge_edits(self, deletes: Sequence[ConversationEventPayload]) -> None:
        """A message was deleted: drop the content of its edit events from the sync
        cache of the receiver whose log got the delete."""
        if not deletes:
            return

        def build(pipe: Pipeline) -> None:
            for event in deletes:
                _PURGE_EDITS.queue(
                    pipe, [self.keys.recent_inbox(event.receiver_id)], [event.body.message_id or ""]
                )

        await run_pipeline(self.redis, build, [_PURGE_EDITS])

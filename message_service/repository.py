"""message_service storage: the acceptance ledger, sequence counters, and the caches.

The only code touching message_service's collections and keys. Everything lives
on the receiver's shard (docs/storage.md):

- `accepted`: the ledger of seq assignments, `_id = "<receiver_id>:<seq>"`,
  with unique (receiver_id, seq), (receiver_id, key) and (receiver_id,
  message_id). `key` is the dedupe key `receiver|sender|client_msg_id` (or
  `receiver|id|message_id` without one), so one insert both claims the message
  and records its seq: a retry or a redelivery is recognised by a refused
  insert, never by a read on the hot path. It holds the whole accepted message,
  so a retry answers the original.
- the heads (`sequence_counters`, owned by libs/readmodels/messages.py, which
  also reads them): a receiver's `{seq, created_ms}` and a direct direction's
  `{seq: dseq}`, advanced with $max behind the reply; the ledger may run ahead
  of them by the messages since the last write at a crash, which
  `load_positions` finds by probing `_id`s forward.

Every read here is an equality lookup on a field with a lookup index
(`_id`, `key`, `message_id`; libs/storage/sqlindexes.py), one per item,
concurrently: `$in` and `$or` are never pushed down by FerretDB, so they scan.
The recent-messages cache is libs/readmodels/messages.py's (RecentCache).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pymongo.errors import BulkWriteError

from libs.contracts.conversations import AppendEventPayload, ConversationEventPayload
from libs.contracts.messages import (
    MessageAcceptedPayload,
    SendMessagePayload,
    from_millis,
    to_millis,
)
from libs.readmodels import messages as readmodel
from libs.storage.mongo import CollectionSpec, IndexSpec, MongoShards, bulk_update

LEDGER = "accepted"
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
        lookups=("_id", "key", "message_id"),
    ),
    *[spec for spec in readmodel.COLLECTIONS if spec.name == readmodel.HEADS],
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


def _entry(receiver_id: str, seq: int) -> dict[str, str]:
    """The lookup of one ledger entry; receiver_id targets its shard on a mongos."""
    return {"_id": _ledger_id(receiver_id, seq), "receiver_id": receiver_id}


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


def stamp(command: LogCommand, seq: int, created_ms: int, *, dseq: int | None = None) -> LogRecord:
    """The record of `command` at `seq` in its receiver's log (`dseq`: a direct
    message's number in its direction; events take none)."""
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
        dseq=dseq,
        attachments=command.attachments,
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
        "dseq": message.dseq,
        "reply_to": message.reply_to.model_dump() if message.reply_to else None,
        "attachments": [a.model_dump() for a in message.attachments],
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
        dseq=doc.get("dseq"),
        reply_to=doc.get("reply_to"),
        attachments=tuple(doc.get("attachments") or ()),
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
        message_id (rare path: retries and redeliveries; two lookups per triple)."""

        async def lookups(receiver_id: str, key: str, message_id: str) -> list[dict[str, Any]]:
            ledger = self.shards.collection_for(receiver_id, LEDGER)
            found = await asyncio.gather(
                ledger.find_one({"receiver_id": receiver_id, "key": key}),
                ledger.find_one({"receiver_id": receiver_id, "message_id": message_id}),
            )
            return [doc for doc in found if doc is not None]

        found = await _all_shards(lookups(*triple) for triple in wanted)
        originals: dict[str, LogRecord] = {}
        for part in found:
            for doc in part:
                message = accepted_from_ledger(doc)
                originals[doc["key"]] = message
                originals[doc["message_id"]] = message
        return originals

    async def load_positions(self, receiver_ids: Sequence[str]) -> dict[str, ReceiverPosition]:
        """The true last seq of each receiver: its head, then the ledger beyond it
        (one `_id` lookup each, concurrently; more only after a crash)."""

        async def one(receiver_id: str) -> tuple[str, ReceiverPosition]:
            head = await readmodel.read_head(self.shards, receiver_id)
            position = ReceiverPosition(
                int(head.get("seq", 0)) if head else 0,
                int(head.get("created_ms", 0)) if head else 0,
            )
            ledger = self.shards.collection_for(receiver_id, LEDGER)
            # The ledger runs ahead of the head only after a crash between the two writes.
            ahead = await ledger.find_one(_entry(receiver_id, position.seq + 1))
            if ahead is not None:
                position = await self._last_in_ledger(ledger.database, ahead)
            return receiver_id, position

        return dict(await _all_shards(one(r) for r in receiver_ids))

    async def load_directions(
        self, directions: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        """The last dseq of each direct direction (receiver, sender), from its head.

        A head lags by the messages since its last write, so after a crash a
        direction may reuse a few dseqs: its bucket then holds a few more than 64
        messages, which readers accept (buckets are read whole, ordered by position).
        """

        async def one(direction: tuple[str, str]) -> tuple[tuple[str, str], int]:
            head = await readmodel.read_head(self.shards, *direction)
            return direction, int(head.get("seq", 0)) if head else 0

        return dict(await _all_shards(one(d) for d in directions))

    async def _last_in_ledger(self, database: Any, found: dict[str, Any]) -> ReceiverPosition:
        """Gallop then bisect over the ledger's contiguous seqs, starting at `found`."""
        receiver_id = found["receiver_id"]
        last = found
        step = 1
        missing: int | None = None
        while missing is None:
            doc = await database[LEDGER].find_one(_entry(receiver_id, last["seq"] + step))
            if doc is None:
                missing = last["seq"] + step
            else:
                last = doc
                step *= 2
        low, high = last["seq"], missing  # low exists, high does not
        while high - low > 1:
            middle = (low + high) // 2
            doc = await database[LEDGER].find_one(_entry(receiver_id, middle))
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

    async def advance_counters(
        self,
        positions: dict[str, ReceiverPosition],
        directions: dict[tuple[str, str], int] | None = None,
    ) -> None:
        """One $max per receiver and per direction, bulk writes per shard."""
        updates = readmodel.counter_updates(
            {r: (p.seq, p.created_ms) for r, p in positions.items()}, directions or {}
        )
        grouped = self._by_shard(updates.items(), lambda item: item[0])
        await _all_shards(
            bulk_update(
                self.shards.databases[shard][readmodel.HEADS],
                [update for _, batch in group for update in batch],
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

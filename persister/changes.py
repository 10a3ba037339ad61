"""persister storage of conversation events, and their effect on stored messages.

`conversation_events` (on the receiver's shard, `_id` = event_id): every logged
event (edits, deletes, reactions, conversation updates) with its receiver and
seq, so sync reads the whole seq log from MongoDB when the Redis cache does not
cover it. Indexes: (receiver_id, seq) unique.

`apply_to_messages` applies the events of a message's own log (`applies`) to the
stored message in `messages`, by `_id` only, in log order per shard (ordered
bulk writes), so the result is the state message_service decided:
- message_edited: content and edited_at;
- message_deleted: the tombstone; content, reactions and reply reference purged;
  and in every log that gets the delete, the content of the message's earlier
  edit events is purged too;
- reaction: the actor added to (or pulled from) `reactors.<emoji>`.
Every update is idempotent, so a redelivered batch changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError

from libs.contracts.conversations import ConversationEventPayload
from libs.storage.mongo import (
    UPDATE_STATEMENTS_PER_COMMAND,
    CollectionSpec,
    IndexSpec,
    MongoShards,
)
from persister.repository import DUPLICATE_KEY, MESSAGES

EVENTS = "conversation_events"

EVENT_COLLECTIONS = (
    CollectionSpec(
        EVENTS,
        indexes=(IndexSpec([("receiver_id", 1), ("seq", 1)], "receiver_seq", unique=True),),
        shard_key={"receiver_id": "hashed"},
    ),
)


def event_document(event: ConversationEventPayload) -> dict[str, Any]:
    return {
        "_id": event.event_id,
        "receiver_id": event.receiver_id,
        "seq": event.seq,
        "created_at": event.created_at,
        "event": event.model_dump(mode="json"),
    }


def _by_id(message_id: str) -> dict[str, Any]:
    # `_id` equality only (FerretDB pushes nothing else down). No "unless deleted"
    # guard is needed: message_service never logs an edit or a reaction after the
    # delete in a message's own log, and these events are applied in log order.
    return {"_id": message_id}


def message_updates(event: ConversationEventPayload) -> list[UpdateOne | UpdateMany]:
    """The writes that apply one event of a message's own log to the stored message."""
    body = event.body
    if not event.applies or body.message_id is None:
        return []
    if body.type == "message_edited":
        return [
            UpdateOne(
                _by_id(body.message_id),
                {"$set": {"content": body.content, "edited_at": body.edited_at}},
            )
        ]
    if body.type == "message_deleted":
        return [
            UpdateOne(
                _by_id(body.message_id),
                {"$set": {"deleted": True, "content": "", "reactors": {}, "reply_to": None}},
            )
        ]
    if body.type == "reaction" and body.emoji:
        field = f"reactors.{body.emoji}"
        operator = "$addToSet" if body.added else "$pull"
        return [UpdateOne(_by_id(body.message_id), {operator: {field: body.actor_id}})]
    return []


class EventStore:
    """Writes logged events, and applies them to the stored messages."""

    def __init__(self, shards: MongoShards) -> None:
        self.shards = shards

    async def insert(self, events: Sequence[ConversationEventPayload]) -> int:
        """One unordered insert per shard; returns the duplicates skipped."""
        by_shard: dict[int, list[dict[str, Any]]] = {}
        for event in events:
            index = self.shards.shard_index(event.receiver_id)
            by_shard.setdefault(index, []).append(event_document(event))
        duplicates = 0
        for index, docs in by_shard.items():
            try:
                await self.shards.databases[index][EVENTS].insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                details = exc.details or {}
                errors = details.get("writeErrors", [])
                if details.get("writeConcernErrors") or any(
                    e.get("code") != DUPLICATE_KEY for e in errors
                ):
                    raise
                duplicates += len(errors)
        return duplicates

    async def apply_to_messages(self, events: Sequence[ConversationEventPayload]) -> int:
        """Apply the batch's changes in log order, per shard; returns the writes."""
        by_shard: dict[int, list[UpdateOne | UpdateMany]] = {}
        purges: dict[int, list[UpdateMany]] = {}
        for event in sorted(events, key=lambda e: (e.receiver_id, e.seq)):
            index = self.shards.shard_index(event.receiver_id)
            updates = message_updates(event)
            if updates:
                by_shard.setdefault(index, []).extend(updates)
            if event.body.type == "message_deleted":
                # Earlier edit events carry the content: purge it from this log (each
                # log, the message's own and a direct chat's other inbox, gets the
                # delete after its edits, in order).
                purges.setdefault(index, []).append(
                    UpdateMany(
                        {
                            "receiver_id": event.receiver_id,
                            "event.body.message_id": event.body.message_id,
                            "event.body.type": "message_edited",
                        },
                        {"$set": {"event.body.content": None}},
                    )
                )
        for index, operations in by_shard.items():
            await _ordered(self.shards.databases[index][MESSAGES], operations)
        for index, operations in purges.items():
            await _ordered(self.shards.databases[index][EVENTS], operations)
        return sum(len(ops) for ops in by_shard.values())


async def _ordered(collection: Any, operations: Sequence[UpdateOne | UpdateMany]) -> None:
    """Ordered updates in commands of at most UPDATE_STATEMENTS_PER_COMMAND (FerretDB
    wedges on large update commands, see docs/storage.md), one after another."""
    step = UPDATE_STATEMENTS_PER_COMMAND
    for start in range(0, len(operations), step):
        await collection.bulk_write(list(operations[start : start + step]), ordered=True)

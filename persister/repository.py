"""persister storage: the `messages` collection on every shard (DESIGN.md §4).

A message lives on the shard of its receiver_id with `_id = message_id`, so a
replayed event is refused by the unique `_id` and counted, not written twice.
Indexes serve every read the API makes (docs/storage.md): (receiver_id, seq)
unique for sync; (receiver_id, created_at, _id) for a group's history;
(receiver_id, sender_id, created_at, _id) for each direction of a direct
conversation; (receiver_id, sender_id, seq) for per-sender seq scans.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pymongo.errors import BulkWriteError

from libs.contracts.messages import MessageAcceptedPayload
from libs.storage.mongo import CollectionSpec, IndexSpec, MongoShards

MESSAGES = "messages"
DUPLICATE_KEY = 11000

COLLECTIONS = (
    CollectionSpec(
        MESSAGES,
        indexes=(
            IndexSpec([("receiver_id", 1), ("seq", 1)], "receiver_seq", unique=True),
            IndexSpec([("receiver_id", 1), ("sender_id", 1), ("seq", 1)], "receiver_sender_seq"),
            IndexSpec([("receiver_id", 1), ("created_at", 1), ("_id", 1)], "receiver_created"),
            IndexSpec(
                [("receiver_id", 1), ("sender_id", 1), ("created_at", 1), ("_id", 1)],
                "receiver_sender_created",
            ),
        ),
        shard_key={"receiver_id": "hashed"},
    ),
)


def message_document(message: MessageAcceptedPayload) -> dict[str, Any]:
    return {
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
    }


class MessageStore:
    """Writes accepted messages to their receivers' shards."""

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

"""The attachments catalog: the `attachments` collection and the blob keys.

The only code that spells either. One document per upload, on the shard that
owns the attachment id (so every read is an `_id` equality, which FerretDB
pushes down to SQLite):

    {_id: "<uuid7>", owner_id, size, content_type, sha256, name?, width?, height?,
     created_at, refs: [{message_id, conversation}], unreferenced_since}

A thumbnail, once made, is a document of its own in `attachment_thumbnails`,
written once and never updated: `{_id: "<attachment id>", size, width, height,
content_type}`. It is not a field of the attachment's document because FerretDB
v1 applies an update as a read-modify-write of the whole document with no lock:
of two concurrent updates of one document one is lost (measured here: 198 of 200
pairs). A thumbnail made while the same attachment was being bound to a message
(the sender's own client asks for the preview as it sends) wiped the new `refs`
and restored `unreferenced_since`: the recipient got 404, and the collector would
later have deleted an attachment a message carries. (Older documents may still
hold a `thumbnail` field; it is read as before.)

`refs` lists the messages that carry the attachment and their conversation
(libs.contracts.messages.conversation_id: "d:<low>:<high>" or "g:<group>"): the
readers are the owner and the participants of those conversations.
`unreferenced_since` is set while `refs` is empty (at upload, and when the last
reference goes) and null otherwise: the collector deletes what has been
unreferenced for longer than its grace period, with a conditional delete, so a
send that binds the attachment at the same moment either wins (the delete
matches nothing) or fails cleanly (the bind matches nothing).

Blobs: `<namespace>/<id>` (the bytes) and `<namespace>/<id>.thumb` (the thumbnail).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from pymongo.errors import DuplicateKeyError

from libs.storage.mongo import CollectionSpec, IndexSpec, MongoShards

COLLECTION = "attachments"
THUMBNAILS = "attachment_thumbnails"

COLLECTIONS = (
    CollectionSpec(
        COLLECTION,
        indexes=(IndexSpec([("unreferenced_since", 1)], "unreferenced_since"),),
        shard_key={"_id": "hashed"},
    ),
    CollectionSpec(THUMBNAILS, shard_key={"_id": "hashed"}),
)


def blob_key(namespace: str, attachment_id: str) -> str:
    return f"{namespace or 'default'}/{attachment_id}"


def thumbnail_key(namespace: str, attachment_id: str) -> str:
    return f"{namespace or 'default'}/{attachment_id}.thumb"


class Thumbnail(BaseModel):
    size: int
    width: int
    height: int
    content_type: str


class AttachmentRecord(BaseModel):
    id: str
    owner_id: str
    size: int
    content_type: str
    sha256: str
    name: str | None = None
    width: int | None = None
    height: int | None = None
    created_at: datetime
    refs: list[dict[str, str]] = []
    unreferenced_since: datetime | None = None
    thumbnail: Thumbnail | None = None

    def to_document(self) -> dict[str, Any]:
        doc = self.model_dump(exclude={"id"})
        doc["_id"] = self.id
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> AttachmentRecord:
        return cls.model_validate({**doc, "id": doc["_id"]})

    def conversations(self) -> set[str]:
        return {ref["conversation"] for ref in self.refs}


class AttachmentCatalog:
    def __init__(self, shards: MongoShards) -> None:
        self.shards = shards

    def _collection(self, attachment_id: str) -> Any:
        return self.shards.collection_for(attachment_id, COLLECTION)

    async def create(self, record: AttachmentRecord) -> None:
        await self._collection(record.id).insert_one(record.to_document())

    async def get(self, attachment_id: str) -> AttachmentRecord | None:
        doc = await self._collection(attachment_id).find_one({"_id": attachment_id})
        return AttachmentRecord.from_document(doc) if doc else None

    async def get_many(self, attachment_ids: Sequence[str]) -> list[AttachmentRecord | None]:
        return list(await asyncio.gather(*(self.get(a) for a in attachment_ids)))

    async def bind(
        self, attachment_ids: Sequence[str], owner_id: str, message_id: str, conversation: str
    ) -> list[str]:
        """Reference each attachment of `owner_id` from a message; the ids that exist
        and belong to the owner (and so were bound)."""
        ref = {"message_id": message_id, "conversation": conversation}

        async def one(attachment_id: str) -> bool:
            done = await self._collection(attachment_id).update_one(
                {"_id": attachment_id, "owner_id": owner_id},
                {"$addToSet": {"refs": ref}, "$set": {"unreferenced_since": None}},
            )
            return done.matched_count == 1

        bound = await asyncio.gather(*(one(a) for a in attachment_ids))
        return [a for a, ok in zip(attachment_ids, bound, strict=True) if ok]

    async def unbind(
        self, attachment_ids: Sequence[str], message_id: str, now: datetime
    ) -> list[str]:
        """Drop `message_id`'s references; the ids no message references any more."""

        async def one(attachment_id: str) -> bool:
            collection = self._collection(attachment_id)
            doc = await collection.find_one({"_id": attachment_id}, {"refs": 1})
            for ref in (doc or {}).get("refs", []):
                # Pulled by exact value: FerretDB v1 ignores a $pull by condition.
                if ref.get("message_id") == message_id:
                    await collection.update_one({"_id": attachment_id}, {"$pull": {"refs": ref}})
            done = await collection.update_one(
                {"_id": attachment_id, "refs": {"$size": 0}, "unreferenced_since": None},
                {"$set": {"unreferenced_since": now}},
            )
            if done.modified_count == 1:
                return True
            doc = await collection.find_one({"_id": attachment_id}, {"refs": 1})
            return doc is not None and not doc.get("refs")

        orphaned = await asyncio.gather(*(one(a) for a in attachment_ids))
        return [a for a, gone in zip(attachment_ids, orphaned, strict=True) if gone]

    async def set_thumbnail(self, attachment_id: str, thumbnail: Thumbnail) -> None:
        """Record a made thumbnail (its own document, written once; a second maker of
        the same thumbnail finds it there and is fine)."""
        collection = self.shards.collection_for(attachment_id, THUMBNAILS)
        with contextlib.suppress(DuplicateKeyError):
            await collection.insert_one({"_id": attachment_id, **thumbnail.model_dump()})

    async def thumbnail(self, attachment_id: str) -> Thumbnail | None:
        """The attachment's thumbnail, if one was made."""
        collection = self.shards.collection_for(attachment_id, THUMBNAILS)
        doc = await collection.find_one({"_id": attachment_id})
        return (
            Thumbnail.model_validate({k: v for k, v in doc.items() if k != "_id"}) if doc else None
        )

    async def forget_thumbnail(self, attachment_id: str) -> None:
        """The attachment is gone: so is its thumbnail's record."""
        await self.shards.collection_for(attachment_id, THUMBNAILS).delete_one(
            {"_id": attachment_id}
        )

    async def unreferenced_before(self, cutoff: datetime, limit: int = 500) -> list[str]:
        """Ids unreferenced since before `cutoff`, from every shard (the collector's scan)."""
        found: list[str] = []
        for collection in self.shards.collections(COLLECTION):
            cursor = collection.find(
                {"unreferenced_since": {"$ne": None, "$lt": cutoff}}, {"_id": 1}
            ).limit(limit)
            found += [doc["_id"] async for doc in cursor]
        return found

    async def delete_if_unreferenced(self, attachment_id: str, cutoff: datetime) -> bool:
        """Delete the document if it is still unreferenced since before `cutoff`."""
        done = await self._collection(attachment_id).delete_one(
            {"_id": attachment_id, "refs": {"$size": 0}, "unreferenced_since": {"$lte": cutoff}}
        )
        return done.deleted_count == 1

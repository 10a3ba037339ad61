"""The attachments catalog under concurrent writers, on the real local store.

FerretDB v1 applies an update as a read-modify-write of the whole document with no
lock, so of two concurrent updates of one document one is lost. The thumbnail used
to be a `$set` on the attachment's document: made while the sender's send bound the
attachment to its message, it wiped the message's reference (the recipient got 404
for the preview, seen in CI) and restored `unreferenced_since` (so the collector
would later delete an attachment a message carries). The thumbnail now has a
document of its own.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from libs.ids import new_id
from libs.media.attachments import Attachments
from libs.media.catalog import AttachmentRecord, Thumbnail


async def test_a_thumbnail_made_while_the_attachment_is_bound_loses_nothing(
    media: Attachments,
) -> None:
    catalog = media.catalog
    owner, peer = new_id(), new_id()
    conversation = f"d:{min(owner, peer)}:{max(owner, peer)}"
    thumbnail = Thumbnail(size=100, width=64, height=48, content_type="image/webp")
    bound_to: dict[str, str] = {}
    for _ in range(20):
        record = AttachmentRecord(
            id=new_id(),
            owner_id=owner,
            size=140,
            content_type="image/png",
            sha256="0" * 64,
            created_at=datetime.now(UTC),
            unreferenced_since=datetime.now(UTC),
        )
        await catalog.create(record)
        message_id = new_id()
        bound, _ = await asyncio.gather(
            catalog.bind([record.id], owner, message_id, conversation),
            catalog.set_thumbnail(record.id, thumbnail),
        )
        assert bound == [record.id]
        bound_to[record.id] = message_id
    for attachment_id, message_id in bound_to.items():
        stored = await catalog.get(attachment_id)
        assert stored is not None
        assert stored.refs == [{"message_id": message_id, "conversation": conversation}]
        assert stored.unreferenced_since is None
    for attachment_id in bound_to:
        assert await catalog.thumbnail(attachment_id) == thumbnail
        stored = await catalog.get(attachment_id)
        assert stored is not None
        made = await media.ensure_thumbnail(stored)  # found, not made again
        assert made.thumbnail == thumbnail
        await media.free([attachment_id], "test")
        assert await catalog.thumbnail(attachment_id) is None

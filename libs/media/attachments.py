"""Attachments as the domain sees them: upload, read, thumbnail, bind, free, collect.

`Attachments` joins the blob store (libs.media.store) and the catalog
(libs.media.catalog). The gateway uses it for the HTTP API; whatever deletes a
message calls `release_message_attachments` so that the attachments no other
message references are freed at once (docs/media.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter

from libs.errors import Invalid, PayloadTooLarge
from libs.ids import new_id
from libs.logging import get_logger
from libs.media import images
from libs.media.catalog import (
    AttachmentCatalog,
    AttachmentRecord,
    Thumbnail,
    blob_key,
    thumbnail_key,
)
from libs.media.store import BlobMissing, BlobStore

log = get_logger(__name__)

#: Bytes of an upload kept to read an image's dimensions from its header.
HEAD_BYTES = 256 * 1024

UPLOADED = Counter("messenger_attachments_uploaded_total", "Attachments stored")
UPLOADED_BYTES = Counter(
    "messenger_attachments_uploaded_bytes_total", "Bytes of attachments stored"
)
FREED = Counter("messenger_attachments_freed_total", "Attachments deleted", ["why"])


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int
    thumbnail_side: int
    max_pixels: int


class Attachments:
    def __init__(
        self, store: BlobStore, catalog: AttachmentCatalog, namespace: str, limits: Limits
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.namespace = namespace
        self.limits = limits
        #: Thumbnails decode whole images: at most two at once per process.
        self._thumbnailing = asyncio.Semaphore(2)

    async def upload(
        self,
        owner_id: str,
        content_type: str,
        name: str | None,
        chunks: AsyncIterable[bytes],
    ) -> AttachmentRecord:
        """Stream `chunks` into the store (413 past the limit), then record it."""
        attachment_id = new_id()
        digest = hashlib.sha256()
        head = bytearray()
        size = 0
        limit = self.limits.max_bytes

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(
                        f"an attachment is at most {limit} bytes",
                        code="attachment_too_large",
                        details={"max_bytes": limit},
                    )
                digest.update(chunk)
                if len(head) < HEAD_BYTES:
                    head.extend(chunk[: HEAD_BYTES - len(head)])
                yield chunk

        await self.store.put(blob_key(self.namespace, attachment_id), counted(), content_type)
        if size == 0:
            await self.store.delete(blob_key(self.namespace, attachment_id))
            raise Invalid("the attachment is empty", code="empty_attachment")
        width = height = None
        if content_type.startswith("image/"):
            found = images.dimensions(bytes(head), self.limits.max_pixels)
            if found is not None:
                width, height = found
        now = datetime.now(UTC)
        record = AttachmentRecord(
            id=attachment_id,
            owner_id=owner_id,
            size=size,
            content_type=content_type,
            sha256=digest.hexdigest(),
            name=name,
            width=width,
            height=height,
            created_at=now,
            refs=[],
            unreferenced_since=now,
        )
        try:
            await self.catalog.create(record)
        except BaseException:
            await self.store.delete(blob_key(self.namespace, attachment_id))
            raise
        UPLOADED.inc()
        UPLOADED_BYTES.inc(size)
        return record

    def read(self, record: AttachmentRecord, start: int, end: int) -> AsyncIterator[bytes]:
        return self.store.read(blob_key(self.namespace, record.id), start, end)

    def read_thumbnail(self, record: AttachmentRecord) -> AsyncIterator[bytes]:
        assert record.thumbnail is not None
        key = thumbnail_key(self.namespace, record.id)
        return self.store.read(key, 0, record.thumbnail.size - 1)

    async def ensure_thumbnail(self, record: AttachmentRecord) -> AttachmentRecord:
        """Make and keep the thumbnail unless it exists; raises images.NotAnImage or
        images.ImageTooLarge (and BlobMissing if the bytes are gone)."""
        if record.thumbnail is not None:
            return record
        made = await self.catalog.thumbnail(record.id)
        if made is not None:
            return record.model_copy(update={"thumbnail": made})
        if not record.content_type.startswith("image/"):
            raise images.NotAnImage(f"the attachment is {record.content_type}, not an image")
        async with self._thumbnailing:
            with tempfile.SpooledTemporaryFile(max_size=1024 * 1024) as spool:
                async for chunk in self.read(record, 0, max(0, record.size - 1)):
                    spool.write(chunk)
                spool.seek(0)
                data, width, height = await asyncio.to_thread(
                    images.make_thumbnail,
                    spool,  # type: ignore[arg-type]
                    self.limits.thumbnail_side,
                    self.limits.max_pixels,
                )

        async def one_chunk() -> AsyncIterator[bytes]:
            yield data

        await self.store.put(
            thumbnail_key(self.namespace, record.id), one_chunk(), images.THUMBNAIL_TYPE
        )
        thumbnail = Thumbnail(
            size=len(data), width=width, height=height, content_type=images.THUMBNAIL_TYPE
        )
        await self.catalog.set_thumbnail(record.id, thumbnail)
        return record.model_copy(update={"thumbnail": thumbnail})

    async def free(self, attachment_ids: Sequence[str], why: str) -> None:
        """Delete the blobs (bytes and thumbnail) of attachments whose record is gone."""
        for attachment_id in attachment_ids:
            await self.store.delete(blob_key(self.namespace, attachment_id))
            await self.store.delete(thumbnail_key(self.namespace, attachment_id))
            await self.catalog.forget_thumbnail(attachment_id)
            FREED.labels(why).inc()

    async def collect(self, grace: timedelta, now: datetime | None = None) -> int:
        """Delete the attachments unreferenced for longer than `grace`; how many."""
        cutoff = (now or datetime.now(UTC)) - grace
        freed = []
        for attachment_id in await self.catalog.unreferenced_before(cutoff):
            if await self.catalog.delete_if_unreferenced(attachment_id, cutoff):
                freed.append(attachment_id)
        await self.free(freed, "unreferenced")
        if freed:
            log.info("unreferenced attachments collected", count=len(freed))
        return len(freed)


async def release_message_attachments(
    attachments: Attachments, message_id: str, attachment_ids: Sequence[str]
) -> list[str]:
    """A message was deleted: drop its references and free at once the attachments that
    no other message references (returns their ids). Idempotent; call it once the
    deletion is durable (issue 16's delete path)."""
    now = datetime.now(UTC)
    orphaned = await attachments.catalog.unbind(attachment_ids, message_id, now)
    freed = [a for a in orphaned if await attachments.catalog.delete_if_unreferenced(a, now)]
    await attachments.free(freed, "message_deleted")
    return freed


__all__ = ["Attachments", "BlobMissing", "Limits", "release_message_attachments"]

"""Blob stores: one interface (`BlobStore`) and its two backends.

- `S3BlobStore`: any S3 API through aiobotocore: S3Proxy locally (deploy/local),
  Amazon S3 or another S3 service in production. An upload is sent as one
  PutObject when it fits in one part, else as a multipart upload; either way at
  most one part (S3_PART_BYTES, 5 MiB by default) is gathered per upload, and
  at most S3_PARTS_IN_FLIGHT parts (4) are being sent by the process at once.
- `GridFSBlobStore`: GridFS on the MongoDB shard that owns the key. Kept for
  deployments on a real MongoDB; not the local default, because FerretDB v1 on
  SQLite scans the chunks collection on every read (docs/media.md has the figures).

Keys are opaque strings made by libs.media.catalog. `read` yields the bytes of
[start, end] (inclusive, as HTTP ranges are) in chunks; a missing key raises
`BlobMissing`. A failed `put` leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, Protocol

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile

from libs.logging import get_logger
from libs.media.settings import MediaSettings
from libs.storage.mongo import MongoShards

log = get_logger(__name__)

READ_CHUNK = 256 * 1024
GRIDFS_BUCKET = "attachment_blobs"


class BlobMissing(Exception):
    """The key names no blob (deleted, or never stored)."""


class BlobStore(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool: ...

    async def put(self, key: str, chunks: AsyncIterable[bytes], content_type: str) -> None:
        """Store everything `chunks` yields under `key`; if `chunks` raises, nothing stays."""
        ...

    def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes start..end (inclusive) of the blob, in chunks."""
        ...

    async def delete(self, key: str) -> None:
        """Idempotent."""
        ...


class S3BlobStore:
    def __init__(self, settings: MediaSettings) -> None:
        self.settings = settings
        self.bucket = settings.s3_bucket
        self._context: Any = None
        self.client: Any = None
        #: Parts being sent at once by this process: each holds its joined copy and,
        #: while the server reads it, the socket's; waiting uploads hold only their
        #: gathered chunks and stop reading their client (backpressure).
        self._sending = asyncio.Semaphore(settings.s3_parts_in_flight)

    async def start(self) -> None:
        s = self.settings
        self._context = get_session().create_client(
            "s3",
            endpoint_url=s.s3_endpoint_url or None,
            region_name=s.s3_region,
            aws_access_key_id=s.s3_access_key_id,
            aws_secret_access_key=s.s3_secret_access_key,
            config=AioConfig(
                s3={"addressing_style": "path"},
                # Checksums only where S3 requires them: S3-compatible servers do not
                # all take botocore's default trailing CRC32 (aws-chunked) uploads.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                max_pool_connections=64,
                connect_timeout=5,
                read_timeout=60,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )
        self.client = await self._context.__aenter__()
        if s.s3_create_bucket:
            try:
                await self.client.head_bucket(Bucket=self.bucket)
            except ClientError:
                try:
                    await self.client.create_bucket(Bucket=self.bucket)
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code", "")
                    if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

    async def close(self) -> None:
        if self._context is not None:
            await self._context.__aexit__(None, None, None)
            self._context = self.client = None

    async def ping(self) -> bool:
        try:
            await self.client.head_bucket(Bucket=self.bucket)
            return True
        except Exception:
            return False

    async def put(self, key: str, chunks: AsyncIterable[bytes], content_type: str) -> None:
        part_bytes = self.settings.s3_part_bytes
        # Chunks are kept as they came and joined once per part: one copy of a part,
        # not the two a growing buffer and a slice of it would make.
        pending: list[bytes] = []
        pending_size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []

        async def send_part() -> None:
            nonlocal upload_id, pending, pending_size
            if upload_id is None:
                created = await self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=key, ContentType=content_type
                )
                upload_id = created["UploadId"]
            async with self._sending:
                body = b"".join(pending)
                pending, pending_size = [], 0
                number = len(parts) + 1
                sent = await self.client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                )
                del body
            parts.append({"PartNumber": number, "ETag": sent["ETag"]})

        try:
            async for chunk in chunks:
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= part_bytes:
                    await send_part()
            if upload_id is None:
                async with self._sending:
                    await self.client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=b"".join(pending),
                        ContentType=content_type,
                    )
                return
            if pending:
                await send_part()
            await self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            if upload_id is not None:
                try:
                    await self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload_id
                    )
                except Exception as exc:
                    log.warning("multipart abort failed", key=key, error=repr(exc))
            raise

    async def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        try:
            response = await self.client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}"
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise BlobMissing(key) from None
            raise
        async with response["Body"] as body:
            while chunk := await body.read(READ_CHUNK):
                yield chunk

    async def delete(self, key: str) -> None:
        await self.client.delete_object(Bucket=self.bucket, Key=key)


class GridFSBlobStore:
    """GridFS (bucket `attachment_blobs`) on the shard that owns each key."""

    def __init__(self, shards: MongoShards) -> None:
        self.shards = shards

    def _bucket(self, key: str) -> AsyncGridFSBucket:
        return AsyncGridFSBucket(self.shards.database_for(key), bucket_name=GRIDFS_BUCKET)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return all(await self.shards.ping())

    async def put(self, key: str, chunks: AsyncIterable[bytes], content_type: str) -> None:
        bucket = self._bucket(key)
        stream = bucket.open_upload_stream_with_id(
            key, key, metadata={"content_type": content_type}
        )
        try:
            async for chunk in chunks:
                await stream.write(chunk)
        except BaseException:
            await stream.abort()
            raise
        await stream.close()

    async def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        try:
            stream = await self._bucket(key).open_download_stream(key)
        except NoFile:
            raise BlobMissing(key) from None
        await stream.seek(start)
        remaining = end - start + 1
        while remaining > 0:
            chunk = await stream.read(min(READ_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk

    async def delete(self, key: str) -> None:
        try:
            await self._bucket(key).delete(key)
        except NoFile:
            return


def open_blob_store(settings: MediaSettings, shards: MongoShards) -> BlobStore:
    """The store `settings.attachments_store` names (started by the caller)."""
    if settings.attachments_store == "gridfs":
        return GridFSBlobStore(shards)
    return S3BlobStore(settings)

"""The BlobStore interface against both real backends: S3 (the launcher's S3Proxy,
through aiobotocore) and GridFS (on the launcher's FerretDB shards)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import pytest

from libs.media.settings import MediaSettings
from libs.media.store import BlobMissing, BlobStore, GridFSBlobStore, S3BlobStore
from libs.storage.mongo import open_shards
from tests.support import endpoints


@pytest.fixture(params=["s3", "gridfs"])
async def store(request: pytest.FixtureRequest, infra: None) -> AsyncIterator[BlobStore]:
    shards = open_shards(endpoints.mongo_shards(), "blobstore_test_" + secrets.token_hex(4))
    backend: BlobStore
    if request.param == "s3":
        backend = S3BlobStore(
            MediaSettings.model_validate({"S3_ENDPOINT_URL": endpoints.s3_endpoint()})
        )
    else:
        backend = GridFSBlobStore(shards)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()
        for client, database in zip(shards.clients, shards.databases, strict=True):
            await client.drop_database(database.name)
        await shards.close()


async def pieces(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(store: BlobStore, key: str, start: int, end: int) -> bytes:
    return b"".join([chunk async for chunk in store.read(key, start, end)])


async def test_round_trip_with_ranges(store: BlobStore) -> None:
    key = "contract/" + secrets.token_hex(8)
    data = os.urandom(12 * 1024 * 1024 + 123)  # past two 5 MiB parts: a multipart upload
    await store.put(key, pieces(data), "application/octet-stream")
    assert await read_all(store, key, 0, len(data) - 1) == data
    assert (
        await read_all(store, key, 5 * 1024 * 1024 - 3, 5 * 1024 * 1024 + 3)
        == data[5 * 1024 * 1024 - 3 : 5 * 1024 * 1024 + 4]
    )
    assert await read_all(store, key, len(data) - 10, len(data) - 1) == data[-10:]
    assert await store.ping()
    await store.delete(key)
    with pytest.raises(BlobMissing):
        await read_all(store, key, 0, 0)
    await store.delete(key)  # idempotent


async def test_small_blob(store: BlobStore) -> None:
    key = "contract/" + secrets.token_hex(8)
    await store.put(key, pieces(b"tiny"), "text/plain")
    assert await read_all(store, key, 1, 2) == b"in"
    await store.delete(key)


async def test_a_failed_upload_leaves_nothing(store: BlobStore) -> None:
    key = "contract/" + secrets.token_hex(8)

    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(6 * 1024 * 1024)  # one part already sent
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        await store.put(key, broken(), "application/octet-stream")
    with pytest.raises(BlobMissing):
        await read_all(store, key, 0, 0)

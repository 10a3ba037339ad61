"""Fixtures for the attachment tests: the API client, images, and direct store access."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from PIL import Image

from libs.media.attachments import Attachments, Limits
from libs.media.catalog import AttachmentCatalog
from libs.media.settings import MediaSettings
from libs.media.store import S3BlobStore
from libs.storage.mongo import open_shards
from tests.support import endpoints
from tests.support.client import Api


@pytest.fixture
def api(http: aiohttp.ClientSession, gateway_url: str) -> Api:
    return Api(http, gateway_url)


def png(width: int = 64, height: int = 48, color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid PNG header claiming a huge 1-bit canvas, with almost no data: a
    decompression bomb as it reaches a server (a few hundred bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


async def upload(
    api: Api, token: str, data: bytes, content_type: str = "application/octet-stream", **params: str
) -> dict:  # type: ignore[type-arg]
    reply = await api.call(
        "POST",
        "/v1/attachments",
        token=token,
        data=data,
        headers={"Content-Type": content_type},
        params=params or None,
    )
    assert reply.status == 201, reply
    return reply.body  # type: ignore[no-any-return]


@pytest.fixture
async def media(system: object, namespace: str) -> AsyncIterator[Attachments]:
    """The attachments service on the test session's namespace (what the gateway uses),
    for what HTTP cannot reach: the collector's clock and message deletion."""
    settings = MediaSettings.model_validate({"S3_ENDPOINT_URL": endpoints.s3_endpoint()})
    shards = open_shards(endpoints.mongo_shards(), f"messenger_{namespace}")
    store = S3BlobStore(settings)
    await store.start()
    try:
        yield Attachments(
            store, AttachmentCatalog(shards), namespace, Limits(25 * 1024 * 1024, 320, 40_000_000)
        )
    finally:
        await store.close()
        await shards.close()

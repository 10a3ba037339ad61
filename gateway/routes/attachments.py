"""Gateway endpoints: attachments (issue 18): upload, download with ranges, thumbnail.

The upload body is the raw file, streamed to the blob store as it arrives (never
whole in memory; 413 past GATEWAY_ATTACHMENT_MAX_BYTES, at once when the
Content-Length says so). Reads are for the uploader and the participants of a
conversation in which a message carries the attachment (gateway.media.readable);
anyone else gets 404. Served bytes always carry `X-Content-Type-Options: nosniff`,
a sandboxing Content-Security-Policy and a Content-Disposition that is `inline`
only for media types browsers render without running code. docs/media.md.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterator
from urllib.parse import quote

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway import media, ratelimit
from gateway.api import Routes
from gateway.auth import Principal
from gateway.errors import error_response
from gateway.keys import ATTACHMENTS, SETTINGS
from gateway.media import readable
from libs.errors import Invalid, NotFound, PayloadTooLarge
from libs.media.catalog import AttachmentRecord
from libs.media.images import ImageTooLarge, NotAnImage
from libs.media.store import BlobMissing

routes = Routes(tag="attachments")
#: Opens the blob store and runs the collector (gateway.media).
setup = media.setup

_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
#: Shown inline by browsers without running code; everything else is a download.
INLINE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "video/mp4",
        "video/webm",
        "audio/mpeg",
        "audio/ogg",
        "audio/webm",
        "audio/mp4",
    }
)
READ_CHUNK = 256 * 1024


class UploadQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=255, description="The file's name")


class AttachmentUploaded(BaseModel):
    id: str
    size: int
    content_type: str
    sha256: str
    name: str | None = None
    width: int | None = None
    height: int | None = None


_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "description": "The file's bytes; its media type in Content-Type",
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
    }
}
_BYTES_DOC = {
    "responses": {
        "200": {
            "description": "The bytes (Accept-Ranges: bytes)",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        },
        "206": {"description": "The requested range (one range per request)"},
        "416": {"description": "The range is outside the file"},
    }
}
_THUMBNAIL_DOC = {
    "responses": {
        "200": {
            "description": "A WebP of at most 320 px a side, made on first request and kept",
            "content": {"image/webp": {"schema": {"type": "string", "format": "binary"}}},
        }
    }
}


def clean_name(name: str | None) -> str | None:
    """A display name without paths, control characters or surrounding spaces."""
    if name is None:
        return None
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return name[:255] or None


def content_disposition(record: AttachmentRecord) -> str:
    """RFC 6266: an ASCII fallback and the UTF-8 name (RFC 8187), never a raw quote."""
    kind = "inline" if record.content_type in INLINE_TYPES else "attachment"
    name = record.name or record.id
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", name)[:100] or "file"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _safety_headers() -> dict[str, str]:
    return {
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, max-age=86400",
    }


@routes.post(
    "/v1/attachments",
    query=UploadQuery,
    response=AttachmentUploaded,
    status=201,
    summary="Upload an attachment (the raw bytes; 25 MB by default)",
    errors=(413, 422, 429),
    openapi=_UPLOAD_DOC,
)
async def upload_attachment(
    request: web.Request, principal: Principal, query: UploadQuery
) -> AttachmentUploaded:
    """Streamed to the store as it arrives. Send it in a message with `attachment_ids`
    within 24 hours, or it is deleted. Uploads are limited per user (429)."""
    await ratelimit.limit_user(request.app, "uploads", principal.user_id)
    limit = request.app[SETTINGS].attachment_max_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(
            f"an attachment is at most {limit} bytes",
            code="attachment_too_large",
            details={"max_bytes": limit},
        )
    if declared == 0 or (declared is None and request.content.at_eof()):
        raise Invalid("the attachment is empty", code="empty_attachment")
    raw_type = request.headers.get("Content-Type", "application/octet-stream")
    content_type = raw_type.split(";", 1)[0].strip().lower()
    if not _MEDIA_TYPE.match(content_type):
        raise Invalid("Content-Type is not a media type", code="invalid_content_type")

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(READ_CHUNK):
            yield chunk

    record = await request.app[ATTACHMENTS].upload(
        principal.user_id, content_type, clean_name(query.name), chunks()
    )
    return AttachmentUploaded(
        id=record.id,
        size=record.size,
        content_type=record.content_type,
        sha256=record.sha256,
        name=record.name,
        width=record.width,
        height=record.height,
    )


class _Unsatisfiable(Exception):
    pass


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end) inclusive of a single `bytes=` range, None for the whole file;
    raises _Unsatisfiable when it lies outside the file."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # several ranges or another unit: RFC 9110 lets us send it all
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        start, end = max(0, size - int(last)), size - 1
        if int(last) == 0:
            start = size
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise _Unsatisfiable
    return start, end


async def _stream(
    request: web.Request,
    chunks: AsyncIterator[bytes],
    *,
    status: int,
    length: int,
    headers: dict[str, str],
) -> web.StreamResponse:
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    try:
        first = await anext(chunks, b"")  # a missing blob fails here, before any header
        await response.prepare(request)
        if first:
            await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]  # closes the store's stream
    await response.write_eof()
    return response


def _attachment_id(request: web.Request) -> str:
    return request.match_info["attachment_id"]


@routes.get(
    "/v1/attachments/{attachment_id}",
    summary="Download an attachment (Range requests supported)",
    errors=(404, 416),
    openapi=_BYTES_DOC,
)
async def download_attachment(request: web.Request, principal: Principal) -> web.StreamResponse:
    """For its uploader and the participants of a conversation where a message carries it."""
    record = await readable(request.app, principal.user_id, _attachment_id(request))
    etag = f'"{record.sha256}"'
    headers = {
        **_safety_headers(),
        "Content-Type": record.content_type,
        "Content-Disposition": content_disposition(record),
        "Accept-Ranges": "bytes",
        "ETag": etag,
    }
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    try:
        span = _byte_range(request.headers.get("Range"), record.size)
    except _Unsatisfiable:
        return error_response(
            416,
            "range_not_satisfiable",
            "the range lies outside the file",
            {"size": record.size},
            headers={"Content-Range": f"bytes */{record.size}"},
        )
    start, end = span if span is not None else (0, record.size - 1)
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{record.size}"
    try:
        return await _stream(
            request,
            request.app[ATTACHMENTS].read(record, start, end),
            status=206 if span is not None else 200,
            length=end - start + 1,
            headers=headers,
        )
    except BlobMissing:
        raise NotFound("no such attachment", code="attachment_not_found") from None


@routes.get(
    "/v1/attachments/{attachment_id}/thumbnail",
    summary="A thumbnail of an image attachment (WebP)",
    errors=(404, 422),
    openapi=_THUMBNAIL_DOC,
)
async def attachment_thumbnail(request: web.Request, principal: Principal) -> web.StreamResponse:
    """422 `not_an_image` when the file is not a JPEG, PNG, GIF or WebP image (whatever
    it claims), 422 `image_too_large` past GATEWAY_IMAGE_MAX_PIXELS (decompression bombs)."""
    attachments = request.app[ATTACHMENTS]
    record = await readable(request.app, principal.user_id, _attachment_id(request))
    try:
        record = await attachments.ensure_thumbnail(record)
    except NotAnImage as exc:
        raise Invalid(str(exc), code="not_an_image") from None
    except ImageTooLarge as exc:
        raise Invalid(str(exc), code="image_too_large") from None
    except BlobMissing:
        raise NotFound("no such attachment", code="attachment_not_found") from None
    assert record.thumbnail is not None
    headers = {
        **_safety_headers(),
        "Content-Type": record.thumbnail.content_type,
        "Content-Disposition": "inline",
        "ETag": f'"{record.sha256}-thumb"',
    }
    try:
        return await _stream(
            request,
            attachments.read_thumbnail(record),
            status=200,
            length=record.thumbnail.size,
            headers=headers,
        )
    except BlobMissing:
        raise NotFound("no such attachment", code="attachment_not_found") from None

"""Attachments end to end (issue 18): upload, read with ranges, thumbnails, sending,
authorization (stranger, former member, blocked user), collection and release."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from PIL import Image

from libs.media.attachments import Attachments, release_message_attachments
from libs.media.catalog import blob_key, thumbnail_key
from libs.media.store import BlobMissing
from tests.attachments.conftest import png, png_bomb, upload
from tests.support.client import Api, User


async def send(api: Api, sender: User, **body: object) -> dict:  # type: ignore[type-arg]
    reply = await api.call("POST", "/v1/messages", json=body, token=sender.token)
    assert reply.status == 201, reply
    return reply.body  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes

    async def read(self) -> bytes:
        return self.body


async def fetch(api: Api, user: User, attachment_id: str, **headers: str) -> Fetched:
    async with api.http.get(
        f"{api.base_url}/v1/attachments/{attachment_id}", headers={**user.auth, **headers}
    ) as response:
        return Fetched(response.status, dict(response.headers), await response.read())


async def blob_exists(media: Attachments, key: str) -> bool:
    try:
        async for _ in media.store.read(key, 0, 0):
            pass
    except BlobMissing:
        return False
    return True


async def test_upload_then_download_by_the_uploader(api: Api) -> None:
    ada = await api.new_user("ada")
    image = png(64, 48)
    uploaded = await upload(api, ada.token, image, "image/png", name="../../cat photo.png")
    assert uploaded["size"] == len(image)
    assert uploaded["sha256"] == hashlib.sha256(image).hexdigest()
    assert uploaded["content_type"] == "image/png"
    assert (uploaded["width"], uploaded["height"]) == (64, 48)
    assert uploaded["name"] == "cat photo.png"  # no path survives

    response = await fetch(api, ada, uploaded["id"])
    assert response.status == 200
    assert await response.read() == image
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Accept-Ranges"] == "bytes"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("inline;")
    assert "filename*=UTF-8''cat%20photo.png" in disposition


async def test_unsafe_types_download_as_attachments_with_safe_names(api: Api) -> None:
    ada = await api.new_user("ada")
    page = b"<script>alert(1)</script>"
    uploaded = await upload(api, ada.token, page, "text/html", name='a"b;\r\nc.html')
    response = await fetch(api, ada, uploaded["id"])
    assert response.status == 200
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "\r" not in disposition
    assert '"b' not in disposition
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response.headers["Content-Security-Policy"]


async def test_range_requests(api: Api) -> None:
    ada = await api.new_user("ada")
    data = os.urandom(1000)
    uploaded = await upload(api, ada.token, data)
    response = await fetch(api, ada, uploaded["id"], Range="bytes=10-19")
    assert response.status == 206
    assert await response.read() == data[10:20]
    assert response.headers["Content-Range"] == "bytes 10-19/1000"

    tail = await fetch(api, ada, uploaded["id"], Range="bytes=-5")
    assert tail.status == 206
    assert await tail.read() == data[-5:]

    open_ended = await fetch(api, ada, uploaded["id"], Range="bytes=990-")
    assert open_ended.status == 206
    assert await open_ended.read() == data[990:]

    outside = await api.call(
        "GET",
        f"/v1/attachments/{uploaded['id']}",
        token=ada.token,
        headers={"Range": "bytes=5000-"},
    )
    assert outside.status == 416
    assert outside.error_code() == "range_not_satisfiable"
    assert outside.headers["Content-Range"] == "bytes */1000"


async def test_bad_uploads_get_clear_errors(api: Api) -> None:
    ada = await api.new_user("ada")
    empty = await api.call("POST", "/v1/attachments", token=ada.token, data=b"")
    assert empty.status == 422
    assert empty.error_code() == "empty_attachment"
    bad_type = await api.call(
        "POST", "/v1/attachments", token=ada.token, data=b"x", headers={"Content-Type": "nonsense"}
    )
    assert bad_type.status == 422
    assert bad_type.error_code() == "invalid_content_type"
    anonymous = await api.call("POST", "/v1/attachments", data=b"x")
    assert anonymous.status == 401


async def test_over_the_limit_is_413_and_leaves_nothing(api: Api, media: Attachments) -> None:
    ada = await api.new_user("ada")
    limit = 25 * 1024 * 1024
    # A client that declares too much is answered before it sends the body.
    host, port = api.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (
            f"POST /v1/attachments HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {ada.token}\r\nContent-Type: video/mp4\r\n"
            f"Content-Length: {limit + 1}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert status_line.split()[1] == b"413"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: caught mid-stream
        block = b"\0" * (1024 * 1024)
        for _ in range(26):
            yield block

    before = await _object_count(media)
    async with api.http.post(
        f"{api.base_url}/v1/attachments", headers=ada.auth, data=chunked()
    ) as response:
        body = await response.json()
    assert response.status == 413
    assert body["error"]["code"] == "attachment_too_large"
    assert await _object_count(media) == before


async def _object_count(media: Attachments) -> int:
    store = media.store
    listed = await store.client.list_objects_v2(  # type: ignore[attr-defined]
        Bucket=store.bucket,
        Prefix=media.namespace + "/",  # type: ignore[attr-defined]
    )
    uploads = await store.client.list_multipart_uploads(  # type: ignore[attr-defined]
        Bucket=store.bucket,
        Prefix=media.namespace + "/",  # type: ignore[attr-defined]
    )
    return int(listed.get("KeyCount", 0)) + len(uploads.get("Uploads", []))


async def test_a_message_carries_attachments_its_recipient_can_read(
    api: Api, media: Attachments
) -> None:
    ada, bob, eve = [await api.new_user(p) for p in ("ada", "bob", "eve")]
    image = png(640, 480, "blue")
    first = await upload(api, ada.token, image, "image/png", name="sky.png")
    second = await upload(api, ada.token, b"%PDF-1.4 ...", "application/pdf", name="doc.pdf")
    sent = await send(api, ada, to_user_id=bob.id, attachment_ids=[first["id"], second["id"]])
    assert sent["content"] == ""
    assert [a["id"] for a in sent["attachments"]] == [first["id"], second["id"]]
    assert sent["attachments"][0] == {
        "id": first["id"],
        "size": len(image),
        "content_type": "image/png",
        "name": "sky.png",
        "width": 640,
        "height": 480,
    }

    history = await api.call("GET", "/v1/messages", token=bob.token, params={"with_user": ada.id})
    assert history.status == 200
    [message] = history.body["messages"]
    assert [a["id"] for a in message["attachments"]] == [first["id"], second["id"]]

    assert (await fetch(api, bob, first["id"])).status == 200
    stranger = await api.call("GET", f"/v1/attachments/{first['id']}", token=eve.token)
    assert stranger.status == 404
    assert stranger.error_code() == "attachment_not_found"
    thumb_stranger = await api.call(
        "GET", f"/v1/attachments/{first['id']}/thumbnail", token=eve.token
    )
    assert thumb_stranger.status == 404

    async with api.http.get(
        f"{api.base_url}/v1/attachments/{first['id']}/thumbnail", headers=bob.auth
    ) as response:
        thumbnail = await response.read()
        assert response.status == 200, thumbnail
        assert response.headers["Content-Type"] == "image/webp"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    shown = Image.open(io.BytesIO(thumbnail))
    assert shown.format == "WEBP"
    assert max(shown.size) == 320
    assert shown.size == (320, 240)
    # Made once and kept: it is in the store, and a second request serves the same bytes.
    assert await blob_exists(media, thumbnail_key(media.namespace, first["id"]))
    async with api.http.get(
        f"{api.base_url}/v1/attachments/{first['id']}/thumbnail", headers=ada.auth
    ) as again:
        assert await again.read() == thumbnail

    not_image = await api.call("GET", f"/v1/attachments/{second['id']}/thumbnail", token=bob.token)
    assert not_image.status == 422
    assert not_image.error_code() == "not_an_image"


async def test_fake_images_and_decompression_bombs_get_clear_errors(api: Api) -> None:
    ada = await api.new_user("ada")
    fake = await upload(api, ada.token, b"this is not a PNG at all", "image/png")
    assert fake.get("width") is None
    reply = await api.call("GET", f"/v1/attachments/{fake['id']}/thumbnail", token=ada.token)
    assert reply.status == 422
    assert reply.error_code() == "not_an_image"

    bomb = await upload(api, ada.token, png_bomb(), "image/png")
    reply = await api.call("GET", f"/v1/attachments/{bomb['id']}/thumbnail", token=ada.token)
    assert reply.status == 422
    assert reply.error_code() == "image_too_large"

    truncated = png(200, 200)[:120]
    cut = await upload(api, ada.token, truncated, "image/png")
    reply = await api.call("GET", f"/v1/attachments/{cut['id']}/thumbnail", token=ada.token)
    assert reply.status == 422
    assert reply.error_code() == "not_an_image"
    healthy = await api.call("GET", "/readyz")
    assert healthy.status == 200


async def test_sending_checks_the_attachments(api: Api) -> None:
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    bobs = await upload(api, bob.token, b"bob's file")
    reply = await api.call(
        "POST",
        "/v1/messages",
        token=ada.token,
        json={"to_user_id": bob.id, "attachment_ids": [bobs["id"]]},
    )
    assert reply.status == 422
    assert reply.error_code() == "unknown_attachment"
    # ...and Ada's failed try did not make Bob's upload readable to her.
    assert (await api.call("GET", f"/v1/attachments/{bobs['id']}", token=ada.token)).status == 404

    many = [(await upload(api, ada.token, b"x"))["id"] for _ in range(11)]
    reply = await api.call(
        "POST", "/v1/messages", token=ada.token, json={"to_user_id": bob.id, "attachment_ids": many}
    )
    assert reply.status == 422
    no_content = await api.call(
        "POST", "/v1/messages", token=ada.token, json={"to_user_id": bob.id, "content": "  "}
    )
    assert no_content.status == 422
    assert no_content.error_code() == "invalid_content"


async def test_a_blocked_sender_cannot_hand_over_an_attachment(api: Api) -> None:
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    assert (await api.call("PUT", f"/v1/blocks/{bob.id}", token=ada.token)).status == 204
    bobs = await upload(api, bob.token, b"unwanted")
    reply = await api.call(
        "POST",
        "/v1/messages",
        token=bob.token,
        json={"to_user_id": ada.id, "content": "hi", "attachment_ids": [bobs["id"]]},
    )
    assert reply.status == 403
    assert reply.error_code() == "blocked"
    # The refused message's reference is gone: Ada cannot read it, Bob still can.
    assert (await api.call("GET", f"/v1/attachments/{bobs['id']}", token=ada.token)).status == 404
    assert (await api.call("GET", f"/v1/attachments/{bobs['id']}", token=bob.token)).status == 200


async def test_a_former_group_member_loses_access(api: Api) -> None:
    ada, bob, cy = await api.new_user("ada"), await api.new_user("bob"), await api.new_user("cy")
    group = await api.call(
        "POST", "/v1/groups", token=ada.token, json={"name": "g", "member_ids": [bob.id, cy.id]}
    )
    assert group.status == 201, group
    group_id = group.body["id"]
    shared = await upload(api, ada.token, png(), "image/png")
    await send(api, ada, to_group_id=group_id, content="look", attachment_ids=[shared["id"]])
    assert (await fetch(api, cy, shared["id"])).status == 200
    removed = await api.call("DELETE", f"/v1/groups/{group_id}/members/{cy.id}", token=ada.token)
    assert removed.status == 204
    assert (await fetch(api, cy, shared["id"])).status == 404
    thumb = await api.call("GET", f"/v1/attachments/{shared['id']}/thumbnail", token=cy.token)
    assert thumb.status == 404
    assert (await fetch(api, bob, shared["id"])).status == 200


async def test_unreferenced_uploads_are_collected_after_the_grace_period(
    api: Api, media: Attachments
) -> None:
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    loose = await upload(api, ada.token, b"never sent")
    kept = await upload(api, ada.token, b"sent")
    await send(api, ada, to_user_id=bob.id, attachment_ids=[kept["id"]])
    grace = timedelta(hours=24)
    now = datetime.now(UTC)

    await media.collect(grace, now=now + timedelta(hours=23))
    assert (await fetch(api, ada, loose["id"])).status == 200

    await media.collect(grace, now=now + timedelta(hours=25))
    assert (await fetch(api, ada, loose["id"])).status == 404
    assert not await blob_exists(media, blob_key(media.namespace, loose["id"]))
    assert (await fetch(api, bob, kept["id"])).status == 200


async def test_deleting_messages_frees_what_nothing_else_references(
    api: Api, media: Attachments
) -> None:
    ada, bob, cy = await api.new_user("ada"), await api.new_user("bob"), await api.new_user("cy")
    shared = await upload(api, ada.token, b"twice sent")
    to_bob = await send(api, ada, to_user_id=bob.id, attachment_ids=[shared["id"]])
    to_cy = await send(api, ada, to_user_id=cy.id, attachment_ids=[shared["id"]])

    freed = await release_message_attachments(media, to_bob["id"], [shared["id"]])
    assert freed == []
    assert (await fetch(api, cy, shared["id"])).status == 200
    assert (await fetch(api, bob, shared["id"])).status == 404  # his message is gone

    freed = await release_message_attachments(media, to_cy["id"], [shared["id"]])
    assert freed == [shared["id"]]
    assert (await fetch(api, ada, shared["id"])).status == 404
    assert not await blob_exists(media, blob_key(media.namespace, shared["id"]))


async def test_deleting_a_message_for_everyone_frees_its_attachments(
    api: Api, media: Attachments
) -> None:
    """The delete route (issue 16) releases what only the deleted message referenced."""
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    mine = await upload(api, ada.token, b"only here")
    sent = await send(api, ada, to_user_id=bob.id, attachment_ids=[mine["id"]])
    assert (await fetch(api, bob, mine["id"])).status == 200

    async def stored() -> bool:
        page = await api.call("GET", "/v1/messages", token=bob.token, params={"with_user": ada.id})
        return any(m["id"] == sent["id"] for m in page.body["messages"])

    for _ in range(200):  # the persister stores it (the delete reads the stored copy)
        if await stored():
            break
        await asyncio.sleep(0.1)
    deleted = await api.call("DELETE", f"/v1/messages/{sent['id']}", token=ada.token)
    assert deleted.status == 204, deleted
    assert (await fetch(api, ada, mine["id"])).status == 404
    assert (await fetch(api, bob, mine["id"])).status == 404
    assert not await blob_exists(media, blob_key(media.namespace, mine["id"]))
    page = await api.call("GET", "/v1/messages", token=bob.token, params={"with_user": ada.id})
    [tombstone] = [m for m in page.body["messages"] if m["id"] == sent["id"]]
    assert tombstone["deleted"] is True
    assert tombstone["attachments"] == []

"""The gateway's side of attachments: the store's lifetime, who may read, binding to sends.

`setup` opens the blob store and the catalog with the app (its collections are
made with the app's MongoDB: gateway/app.py), and runs the
collector of unreferenced uploads every GATEWAY_ATTACHMENT_COLLECT_INTERVAL_S on
the one instance that holds a Redis lock. `readable` is the one authorization
rule: the uploader, or a participant (now) of a conversation in which a message
carries the attachment; anyone else is told it does not exist. `bind_to_message`
and `unbind_from_message` are what gateway.sending calls around a send.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

from aiohttp import web

from gateway.keys import ATTACHMENTS, KEYS, MONGO, REDIS
from gateway.settings import GatewaySettings
from libs.contracts.messages import AttachmentRef
from libs.errors import Invalid, NotFound, Unavailable
from libs.group_projection import PROJECTION as GROUPS_PROJECTION
from libs.ids import new_id
from libs.lifecycle import add_readiness_check
from libs.logging import get_logger
from libs.media.attachments import Attachments, Limits
from libs.media.catalog import AttachmentCatalog, AttachmentRecord
from libs.media.store import open_blob_store

log = get_logger(__name__)


def setup(app: web.Application, settings: GatewaySettings) -> None:
    app.cleanup_ctx.append(_attachments_context(settings))


def _attachments_context(settings: GatewaySettings):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        store = open_blob_store(settings, app[MONGO])
        await store.start()
        app[ATTACHMENTS] = Attachments(
            store,
            AttachmentCatalog(app[MONGO]),
            settings.namespace,
            Limits(
                max_bytes=settings.attachment_max_bytes,
                thumbnail_side=settings.thumbnail_max_side,
                max_pixels=settings.image_max_pixels,
            ),
        )
        add_readiness_check(app, "attachment_store", store.ping)
        collector = asyncio.create_task(_collect_forever(app, settings))
        try:
            yield
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
            await store.close()

    return ctx


async def _collect_forever(app: web.Application, settings: GatewaySettings) -> None:
    """Every interval, the instance that takes the lock collects unreferenced uploads."""
    redis, lock = app[REDIS], app[KEYS].attachments_collector_lock()
    grace = timedelta(seconds=settings.attachment_unreferenced_ttl_s)
    holder = new_id()
    while True:
        await asyncio.sleep(settings.attachment_collect_interval_s)
        try:
            ttl = max(1, int(settings.attachment_collect_interval_s))
            if await redis.set(lock, holder, nx=True, ex=ttl):
                await app[ATTACHMENTS].collect(grace)
        except Exception as exc:  # the next round retries
            log.warning("attachment collection failed", error=f"{type(exc).__name__}: {exc}")


async def readable(app: web.Application, user_id: str, attachment_id: str) -> AttachmentRecord:
    """The attachment if `user_id` may read it, else NotFound (never 403: no leak)."""
    record = (
        await app[ATTACHMENTS].catalog.get(attachment_id) if _plausible(attachment_id) else None
    )
    if record is None:
        raise NotFound("no such attachment", code="attachment_not_found")
    if record.owner_id == user_id:
        return record
    groups: list[str] = []
    for conversation in record.conversations():
        kind, _, rest = conversation.partition(":")
        if kind == "d" and user_id in rest.split(":"):
            return record
        if kind == "g":
            groups.append(rest)
    if groups:
        redis, keys = app[REDIS], app[KEYS]
        async with redis.pipeline(transaction=False) as pipe:
            pipe.exists(keys.projection_ready(GROUPS_PROJECTION))
            for group_id in groups:
                pipe.hexists(keys.group_members(group_id), user_id)
            ready, *member = await pipe.execute()
        if not ready:
            raise Unavailable("group data is being rebuilt; retry shortly")
        if any(member):
            return record
    raise NotFound("no such attachment", code="attachment_not_found")


def _plausible(attachment_id: str) -> bool:
    return 1 <= len(attachment_id) <= 64 and all(c.isalnum() or c == "-" for c in attachment_id)


async def bind_to_message(
    app: web.Application,
    sender_id: str,
    attachment_ids: Sequence[str],
    message_id: str,
    conversation: str,
) -> tuple[AttachmentRef, ...]:
    """Reference the sender's attachments from the message about to be sent (before it
    is sent, so that its recipients may read them the moment they see it)."""
    if not attachment_ids:
        return ()
    if len(set(attachment_ids)) != len(attachment_ids):
        raise Invalid("an attachment is listed twice", code="duplicate_attachment")
    catalog = app[ATTACHMENTS].catalog
    bound = await catalog.bind(attachment_ids, sender_id, message_id, conversation)
    if len(bound) != len(attachment_ids):
        await unbind_from_message(app, bound, message_id)
        missing = [a for a in attachment_ids if a not in bound]
        raise Invalid(
            "attachments must be uploads of the sender",
            code="unknown_attachment",
            details={"attachment_ids": missing},
        )
    records = await catalog.get_many(attachment_ids)
    return tuple(
        AttachmentRef(
            id=r.id,
            size=r.size,
            content_type=r.content_type,
            name=r.name,
            width=r.width,
            height=r.height,
        )
        for r in records
        if r is not None
    )


async def unbind_from_message(
    app: web.Application, attachment_ids: Sequence[str], message_id: str
) -> None:
    """The message was refused (or answered as an earlier one): drop its references;
    attachments left unreferenced are collected after the grace period as usual."""
    if attachment_ids:
        await app[ATTACHMENTS].catalog.unbind(attachment_ids, message_id, datetime.now(UTC))

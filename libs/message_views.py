"""Messages as one caller sees them: reactions and reply previews.

Stored messages (the caches, MongoDB) keep who reacted with what (`reactors`)
and what a reply answers (id, sender, and where the original is); what a
client sees depends on who asks and on the original's current state:
- `reactions` {emoji: count} and the caller's `my_reactions`;
- `reply_to.preview`: the first REPLY_PREVIEW_CHARS characters of the original's
  current content, or its tombstone (`deleted`, no preview) once it was deleted.
The preview is read at read time, never copied into the reply, so editing or
deleting the original changes (or purges) every reply's preview.

`render` is used by the gateway (history, sync, send answers, resume) and by
delivery_service (pushed message frames). Originals are looked up in the
conversation's history cache by position (one round trip), then on their
receiver's shard by `_id`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys
from libs.contracts.messages import REPLY_PREVIEW_CHARS, MessageView, conversation_id
from libs.storage.mongo import MongoShards

#: The persister's collection (read by _id only).
MESSAGES = "messages"


def view_from_document(doc: dict[str, Any]) -> MessageView:
    """A stored `messages` document in its current state (with its reactors)."""
    deleted = bool(doc.get("deleted"))
    return MessageView.model_validate(
        {
            "id": doc["_id"],
            "seq": doc["seq"],
            "receiver": {"kind": doc["receiver_kind"], "id": doc["receiver_id"]},
            "sender_id": doc["sender_id"],
            "content": "" if deleted else doc["content"],
            "created_at": doc["created_at"],
            "client_msg_id": doc.get("client_msg_id"),
            "client_sent_at": doc.get("client_sent_at"),
            "edited_at": doc.get("edited_at"),
            "deleted": deleted,
            "reactors": {} if deleted else (doc.get("reactors") or {}),
            "reply_to": None if deleted else doc.get("reply_to"),
        }
    )


def render_reactions(caller_id: str | None, views: Sequence[MessageView]) -> None:
    for view in views:
        reactors = {e: u for e, u in (view.reactors or {}).items() if u}
        if view.deleted:
            view.content = ""
            view.reply_to = None
            reactors = {}
        view.reactions = {e: len(u) for e, u in sorted(reactors.items())}
        view.my_reactions = sorted(e for e, u in reactors.items() if caller_id in u)


def preview_of(original: MessageView | None) -> tuple[str | None, bool]:
    if original is None:
        return None, False
    if original.deleted:
        return None, True
    return original.content[:REPLY_PREVIEW_CHARS], False


async def originals_of(
    redis: Redis, keys: RedisKeys, mongo: MongoShards, views: Sequence[MessageView]
) -> dict[str, MessageView]:
    """The messages the replies among `views` answer, by id, in their current state."""
    wanted: dict[str, tuple[str, str, str]] = {}  # id -> (conversation, position, receiver)
    for view in views:
        ref = view.reply_to
        if ref is None or ref.position is None or ref.receiver_id is None:
            continue
        conversation = conversation_id(view.receiver.kind, view.receiver.id, view.sender_id)
        wanted[ref.id] = (conversation, ref.position, ref.receiver_id)
    if not wanted:
        return {}
    ids = list(wanted)
    async with redis.pipeline(transaction=False) as pipe:
        for message_id in ids:
            conversation, pos, _ = wanted[message_id]
            pipe.hget(keys.recent_bodies(conversation), pos)
        bodies = await pipe.execute()
    found: dict[str, MessageView] = {}
    for message_id, raw in zip(ids, bodies, strict=True):
        if raw:
            found[message_id] = MessageView.model_validate_json(raw)
    missing = [i for i in ids if i not in found]
    # `_id` equality, one lookup each: the one filter FerretDB pushes down.
    docs = await asyncio.gather(
        *(
            mongo.collection_for(wanted[message_id][2], MESSAGES).find_one({"_id": message_id})
            for message_id in missing
        )
    )
    for doc in docs:
        if doc is not None:
            found[doc["_id"]] = view_from_document(doc)
    return found


async def render(
    redis: Redis,
    keys: RedisKeys,
    mongo: MongoShards,
    caller_id: str | None,
    views: Sequence[MessageView],
) -> None:
    """Fill the caller-dependent fields of `views` in place (see the module docstring)."""
    render_reactions(caller_id, views)
    originals = await originals_of(redis, keys, mongo, views)
    for view in views:
        if view.reply_to is None:
            continue
        preview, deleted = preview_of(originals.get(view.reply_to.id))
        view.reply_to.preview = preview
        view.reply_to.deleted = deleted

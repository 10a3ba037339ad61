"""Finding a message by id, and what the caller may do with it.

`locate` reads the message's locator (RedisKeys.message_locator, written by
message_service before the send's reply, so a message can be edited the moment
its 201 arrives), else its document on the shards by `_id`.

`authorize` answers, for every message route:
- 404 `message_not_found` when the caller may not see the message: unknown, or
  not a participant of its direct chat, or not (any more) a member of its group;
- 403 when the caller sees it but may not do this: edit (only the sender),
  delete (the sender, or in a group an owner or admin), and in a direct chat
  whose other participant blocks the caller, edit and react (`blocked`), as a
  send would be refused.
The message's state (deleted: 409; too old to edit: 403) is message_service's to
check, in order with the other changes of its receiver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from gateway.keys import KEYS, MONGO, REDIS
from libs.contracts.messages import ReceiverKind, conversation_id, position
from libs.errors import Forbidden, NotFound
from libs.group_projection import blocks, group_members

MESSAGES = "messages"  # the persister's collection, read by _id only
Action = Literal["see", "edit", "delete", "react"]
MAX_ID_CHARS = 64


@dataclass(frozen=True, slots=True)
class MessageRef:
    id: str
    receiver_kind: ReceiverKind
    receiver_id: str
    seq: int
    sender_id: str
    position: str

    @property
    def conversation(self) -> str:
        return conversation_id(self.receiver_kind, self.receiver_id, self.sender_id)


def not_found() -> NotFound:
    return NotFound("no such message", code="message_not_found")


async def locate(app: web.Application, message_id: str) -> MessageRef | None:
    if not message_id or len(message_id) > MAX_ID_CHARS:
        return None
    raw = await app[REDIS].get(app[KEYS].message_locator(message_id))
    if raw:
        kind, receiver_id, seq, sender_id, pos = raw.split("|", 4)
        return MessageRef(message_id, kind, receiver_id, int(seq), sender_id, pos)  # type: ignore[arg-type]
    for collection in app[MONGO].collections(MESSAGES):
        doc = await collection.find_one({"_id": message_id})
        if doc is not None:
            return MessageRef(
                message_id,
                doc["receiver_kind"],
                doc["receiver_id"],
                int(doc["seq"]),
                doc["sender_id"],
                position(doc["created_at"], message_id),
            )
    return None


async def authorize(
    app: web.Application, caller_id: str, message_id: str, action: Action
) -> MessageRef:
    ref = await locate(app, message_id)
    if ref is None:
        raise not_found()
    redis, keys = app[REDIS], app[KEYS]
    if ref.receiver_kind == "group":
        members = await group_members(redis, keys, ref.receiver_id)
        if not members or caller_id not in members:
            raise not_found()
        if action == "edit" and caller_id != ref.sender_id:
            raise Forbidden("only the sender may edit a message", code="not_the_sender")
        if (
            action == "delete"
            and caller_id != ref.sender_id
            and members[caller_id] not in ("owner", "admin")
        ):
            raise Forbidden(
                "only the sender, or an owner or admin of the group, may delete it",
                code="not_allowed",
            )
        return ref
    if caller_id not in (ref.receiver_id, ref.sender_id):
        raise not_found()
    if action in ("edit", "delete") and caller_id != ref.sender_id:
        raise Forbidden(f"only the sender may {action} a message", code="not_the_sender")
    other = ref.receiver_id if caller_id == ref.sender_id else ref.sender_id
    if (
        action in ("edit", "react")
        and other != caller_id
        and await blocks(redis, keys, other, caller_id)
    ):
        raise Forbidden("the other participant does not accept this from you", code="blocked")
    return ref

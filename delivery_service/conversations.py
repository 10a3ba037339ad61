"""delivery_service's conversation handlers: the inbox read model and event pushes.

- `record_messages`: every accepted message moves its conversation in the inbox
  of each participant (a group: every member), sets its last message, and adds
  its seq to the unread set of everyone but the sender.
- `record_membership`: a user who joins a group gets its conversation; one who
  leaves (or whose group is deleted) loses it.
- `record_reads`: a read watermark that advanced empties the unread set up to it
  and logs a `conversation_updated` event in the reader's own inbox (AppendEvent
  to message_service), which reaches the reader's other devices (push, sync).
- `change_settings`: UpdateConversationSettings (mute, archive): durable, then
  the read model, then the answer, and a `conversation_updated` event likewise.
- `push_events`: logged events (edits, deletes, reactions, conversation updates)
  to the sockets of the log's owner: a user's inbox -> that user, unless the user
  blocks the actor; a group's log -> its members but those who block the actor
  (the actor's own devices included).
- `record_changes`: an edit or a delete updates the inbox's last message where
  it is that message; a delete removes the message from unread sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from delivery_service.inbox import InboxRepository, ReadState, Touch
from delivery_service.repository import DeliveryRepository, GroupAudience, WatermarkMove
from libs.bus.outbox import Outbox
from libs.contracts.conversations import (
    AppendEvent,
    AppendEventPayload,
    ConversationEventPayload,
    ConversationRef,
    EventBody,
    EventView,
    UpdateConversationSettings,
)
from libs.contracts.envelope import Envelope
from libs.contracts.groups import GroupCreated, GroupDeleted, MemberAdded, MemberRemoved
from libs.contracts.keys import RedisKeys
from libs.contracts.messages import MessageAcceptedPayload, MessageView, to_millis
from libs.contracts.topics import MESSAGES_COMMANDS
from libs.push import publish_frames


def _last_message(message: MessageAcceptedPayload) -> str:
    return orjson.dumps(MessageView.of(message).stored()).decode()


async def record_messages(
    messages: Sequence[MessageAcceptedPayload],
    audience: GroupAudience,
    *,
    inbox: InboxRepository,
) -> None:
    """Each message's conversation moves up for its sender and receivers; receivers
    count it unread. `audience` (delivery_service.handlers.push_messages): a member
    who blocks a group message's sender sees neither the message nor a count for it."""
    touches: list[Touch] = []
    for m in messages:
        at, body = to_millis(m.created_at), _last_message(m)
        if m.receiver_kind == "group":
            for user_id in audience.recipients.get(m.message_id, []):
                touches.append(
                    Touch(user_id, "group", m.receiver_id, at, body, m.message_id, m.seq)
                )
            if m.message_id in audience.sender_is_member:  # not one who left since
                touches.append(Touch(m.sender_id, "group", m.receiver_id, at, body, m.message_id))
            continue
        touches.append(
            Touch(
                m.receiver_id,
                "user",
                m.sender_id,
                at,
                body,
                m.message_id,
                None if m.sender_id == m.receiver_id else m.seq,
            )
        )
        if m.sender_id != m.receiver_id:
            touches.append(Touch(m.sender_id, "user", m.receiver_id, at, body, m.message_id))
    await inbox.touch(touches)


async def record_membership(events: Sequence[Envelope], *, inbox: InboxRepository) -> None:
    joins: list[Touch] = []
    for event in events:
        p = event.payload
        at = to_millis(event.occurred_at)
        if isinstance(event, GroupCreated):
            joins += [
                Touch(m.user_id, "group", p.group_id, at, is_message=False) for m in p.members
            ]
        elif isinstance(event, MemberAdded):
            joins.append(Touch(p.user_id, "group", p.group_id, at, is_message=False))
        elif isinstance(event, MemberRemoved):
            await inbox.leave(p.user_id, f"group:{p.group_id}")
        elif isinstance(event, GroupDeleted):
            for user_id in p.member_ids:
                await inbox.leave(user_id, f"group:{p.group_id}")
    await inbox.touch(joins)


def _conversation_updated(
    user_id: str, conversation: ConversationRef, state: ReadState, event_id: str
) -> AppendEvent:
    return AppendEvent.of(
        AppendEventPayload(
            event_id=event_id,
            receiver_kind="user",
            receiver_id=user_id,
            body=EventBody(
                type="conversation_updated",
                actor_id=user_id,
                conversation=conversation,
                unread_count=state.unread_count,
                muted=state.muted,
                archived=state.archived,
                read_seq=state.read_seq,
            ),
        )
    )


async def record_reads(
    moves: Sequence[WatermarkMove], outbox: Outbox, *, inbox: InboxRepository
) -> None:
    """Read watermarks that advanced: the unread sets, and the reader's other devices."""
    for move in moves:
        if move.kind != "read":
            continue
        if move.receiver_kind == "group":
            conversation = ConversationRef(kind="group", id=move.receiver_id)
        else:
            conversation = ConversationRef(kind="user", id=move.thread_id)
        state = await inbox.mark_read(
            move.reader_id, f"{conversation.kind}:{conversation.id}", move.seq
        )
        event_id = f"read.{move.receiver_id}.{move.field}.{move.seq}"
        outbox.emit(
            MESSAGES_COMMANDS,
            move.reader_id,
            _conversation_updated(move.reader_id, conversation, state, event_id),
        )


async def change_settings(
    commands: Sequence[UpdateConversationSettings], outbox: Outbox, *, inbox: InboxRepository
) -> None:
    for command in commands:
        p = command.payload
        state = await inbox.update_settings(
            p.user_id, p.conversation.kind, p.conversation.id, p.muted, p.archived
        )
        outbox.emit(
            MESSAGES_COMMANDS,
            p.user_id,
            _conversation_updated(p.user_id, p.conversation, state, f"settings.{command.id}"),
        )
        outbox.reply(
            command,
            {"unread_count": state.unread_count, "muted": state.muted, "archived": state.archived},
        )


@dataclass(frozen=True, slots=True)
class _ActorTarget:
    """The fields DeliveryRepository.group_recipients reads, for an event."""

    message_id: str
    receiver_id: str
    sender_id: str


async def push_events(
    events: Sequence[ConversationEventPayload],
    *,
    repository: DeliveryRepository,
    redis: Redis,
    keys: RedisKeys,
) -> None:
    in_groups = [e for e in events if e.receiver_kind == "group"]
    recipients = await repository.group_recipients(
        [_ActorTarget(e.event_id, e.receiver_id, e.body.actor_id) for e in in_groups]  # type: ignore[misc]
    )
    direct = [e for e in events if e.receiver_kind == "user"]
    async with redis.pipeline(transaction=False) as pipe:
        for e in direct:
            pipe.sismember(keys.blocks(e.receiver_id), e.body.actor_id)
        blocked = await pipe.execute()
    blocked_events = {e.event_id for e, flag in zip(direct, blocked, strict=True) if flag}
    pushes: list[tuple[list[str], dict[str, Any]]] = []
    for e in events:
        if e.receiver_kind == "group":
            audience = [*recipients.get(e.event_id, []), e.body.actor_id]
        elif e.event_id in blocked_events:
            continue
        else:
            audience = [e.receiver_id]
        pushes.append((audience, EventView.of(e).frame()))
    await publish_frames(redis, keys, pushes)


async def record_changes(
    events: Sequence[ConversationEventPayload],
    *,
    inbox: InboxRepository,
    repository: DeliveryRepository,
) -> None:
    """Edits and deletes of the messages' own logs, on the inbox entries."""
    relevant = [
        e
        for e in events
        if e.applies and e.body.type in ("message_edited", "message_deleted") and e.body.message_id
    ]
    if not relevant:
        return
    members = await repository.current_members(
        [e.receiver_id for e in relevant if e.receiver_kind == "group"]
    )
    for e in relevant:
        body = e.body
        assert body.message_id is not None
        if e.receiver_kind == "group":
            entries = [(u, f"group:{e.receiver_id}") for u in members.get(e.receiver_id, [])]
        else:
            # Own log of a direct message: the receiver's inbox; the peer is the sender.
            entries = [(e.receiver_id, f"user:{body.conversation.id}")]
            if body.conversation.id != e.receiver_id:
                entries.append((body.conversation.id, f"user:{e.receiver_id}"))
        view = await _current_last(inbox, entries, body.message_id)
        if view is None:
            if body.type == "message_deleted":
                await inbox.message_changed(entries, body.message_id, "", body.message_seq)
            continue
        if body.type == "message_deleted":
            view.update(content="", deleted=True, reactors={}, reply_to=None)
        else:
            view.update(content=body.content, edited_at=body.edited_at)
        await inbox.message_changed(
            entries,
            body.message_id,
            orjson.dumps(view, default=str).decode(),
            body.message_seq if body.type == "message_deleted" else None,
        )


async def _current_last(
    inbox: InboxRepository, entries: Sequence[tuple[str, str]], message_id: str
) -> dict[str, Any] | None:
    """The stored last message of an entry whose last message is `message_id` (they
    all hold the same JSON): one pipelined round trip over the entries."""
    async with inbox.redis.pipeline(transaction=False) as pipe:
        for user_id, conversation in entries:
            pipe.hmget(inbox.keys.inbox_entry(user_id, conversation), "last_message_id")
        ids = await pipe.execute()
    for (user_id, conversation), (last_id,) in zip(entries, ids, strict=True):
        if last_id == message_id:
            raw = await inbox.redis.hget(
                inbox.keys.inbox_entry(user_id, conversation), "last_message"
            )
            return dict(orjson.loads(raw)) if raw else None
    return None

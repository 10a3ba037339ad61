"""delivery_service's handlers: push accepted messages, move watermarks, push receipts.

One batch handler sees the three kinds of records the service consumes and
handles each kind for the whole batch at once:
- MessageAccepted (messages.events.v1): resolve recipients (direct: the receiver;
  group: the members minus the sender minus those who block the sender; plus the
  sender's own other devices), then push with one connections lookup and one
  PUBLISH per gateway instance for the whole batch.
- AdvanceWatermark (receipts.commands.v1): collapse to the highest seq per
  watermark, make it durable in MongoDB ($max), move the Redis cache forward,
  answer the asker, and emit ReceiptChanged to each sender whose messages
  became delivered/read.
- ReceiptChanged (receipts.events.v1): push a receipt frame to the sender.
- ConversationEvent (messages.events.v1), UpdateConversationSettings
  (conversations.commands.v1), and the inbox read model: delivery_service/conversations.py.
- group events (groups.events.v1): push a `group` frame to the group's members
  (and to the member concerned, e.g. one just removed); block events go to the
  blocker's own devices only (a blocked user is not told).
Everything is idempotent: a redelivered batch pushes again (clients dedupe by
id) and re-applies `max` updates, which change nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter
from redis.asyncio import Redis

from delivery_service.conversations import (
    change_settings,
    push_events,
    record_changes,
    record_membership,
    record_messages,
    record_reads,
)
from delivery_service.inbox import InboxRepository
from delivery_service.repository import DeliveryRepository, GroupAudience, WatermarkMove
from libs.bus.consumer import Delivery
from libs.bus.outbox import Outbox
from libs.contracts.conversations import ConversationEvent, UpdateConversationSettings
from libs.contracts.envelope import Envelope
from libs.contracts.groups import GROUP_EVENTS, UserBlocked, UserUnblocked
from libs.contracts.keys import RedisKeys
from libs.contracts.messages import MessageAccepted, MessageAcceptedPayload, MessageView
from libs.contracts.receipts import (
    AdvanceWatermark,
    ReceiptChanged,
    ReceiptChangedPayload,
    WatermarkView,
)
from libs.contracts.topics import RECEIPTS_EVENTS
from libs.logging import get_logger
from libs.message_views import render
from libs.push import publish_frames

log = get_logger(__name__)

MESSAGE_FRAMES = Counter(
    "messenger_delivery_message_frames_total", "Message frames published for sockets"
)
PUSH_PAYLOADS = Counter(
    "messenger_delivery_push_payloads_total", "PUBLISHes to gateway instances (one per batch)"
)
WATERMARKS_ADVANCED = Counter(
    "messenger_delivery_watermarks_advanced_total", "Watermarks moved forward", ["kind"]
)
RECEIPTS_EMITTED = Counter("messenger_delivery_receipts_emitted_total", "ReceiptChanged emitted")


def message_frame(message: MessageAcceptedPayload) -> dict[str, Any]:
    """The frame every socket of a recipient gets: the message as history shows it."""
    return {"type": "message", "message": MessageView.of(message).model_dump(mode="json")}


async def handle_batch(
    deliveries: Sequence[Delivery],
    outbox: Outbox,
    *,
    repository: DeliveryRepository,
    inbox: InboxRepository,
    redis: Redis,
    keys: RedisKeys,
) -> None:
    if not await repository.projection_ready():
        rebuilt = await repository.rebuild_projection()
        log.info("receipts projection rebuilt", watermarks=rebuilt)
    if not await inbox.projection_ready():
        reloaded = await inbox.reload_settings()
        log.info("inbox settings reloaded", settings=reloaded)
    accepted = [d.message.payload for d in deliveries if isinstance(d.message, MessageAccepted)]
    events = [d.message.payload for d in deliveries if isinstance(d.message, ConversationEvent)]
    commands = [d.message for d in deliveries if isinstance(d.message, AdvanceWatermark)]
    receipts = [d.message.payload for d in deliveries if isinstance(d.message, ReceiptChanged)]
    group_changes = [d.message for d in deliveries if isinstance(d.message, GROUP_EVENTS)]
    settings = [d.message for d in deliveries if isinstance(d.message, UpdateConversationSettings)]
    # Pushes first (latency), then the inbox read model.
    audience = GroupAudience({}, frozenset())
    if accepted:
        audience = await push_messages(accepted, repository=repository, redis=redis, keys=keys)
    if events:
        await push_events(events, repository=repository, redis=redis, keys=keys)
    if group_changes:
        # Joins before the batch's messages, so a new member's inbox counts them.
        await record_membership(group_changes, inbox=inbox)
    if accepted:
        await record_messages(accepted, audience, inbox=inbox)
    if events:
        await record_changes(events, inbox=inbox, repository=repository)
    if commands:
        advanced = await advance_watermarks(commands, outbox, repository=repository)
        await record_reads(advanced, outbox, inbox=inbox)
    if settings:
        await change_settings(settings, outbox, inbox=inbox)
    if receipts:
        await push_receipts(receipts, redis=redis, keys=keys)
    if group_changes:
        await push_group_changes(group_changes, repository=repository, redis=redis, keys=keys)


async def push_messages(
    messages: Sequence[MessageAcceptedPayload],
    *,
    repository: DeliveryRepository,
    redis: Redis,
    keys: RedisKeys,
) -> GroupAudience:
    """Push each message to its recipients and the sender's devices; returns the
    group messages' audience, which the inbox counts unread for."""
    await repository.remember_messages(messages)
    audience = await repository.group_audience([m for m in messages if m.receiver_kind == "group"])
    pushes: list[tuple[list[str], dict[str, Any]]] = []
    replies = [MessageView.of(m) for m in messages if m.reply_to is not None]
    if replies:  # their frames carry the preview of the message they answer
        await render(redis, keys, repository.mongo, None, replies)
    rendered = {view.id: view for view in replies}
    for message in messages:
        if message.receiver_kind == "group":
            recipients = audience.recipients.get(message.message_id, [])
        else:
            recipients = [message.receiver_id]
        view = rendered.get(message.message_id)
        frame = (
            {"type": "message", "message": view.model_dump(mode="json")}
            if view is not None
            else message_frame(message)
        )
        # The sender's other devices show the message too (clients dedupe by id).
        pushes.append(([*recipients, message.sender_id], frame))
    MESSAGE_FRAMES.inc(len(pushes))
    PUSH_PAYLOADS.inc(await publish_frames(redis, keys, pushes))
    return audience


async def advance_watermarks(
    commands: Sequence[AdvanceWatermark], outbox: Outbox, *, repository: DeliveryRepository
) -> list[WatermarkMove]:
    """Move the batch's watermarks; returns those that advanced. A mark past the
    highest seq known of its receiver's log is clamped to it (issue 15, finding 11),
    so a read_seq never runs ahead of the conversation."""
    last = await repository.last_seqs([c.payload.receiver_id for c in commands])
    highest: dict[tuple[str, str, str], WatermarkMove] = {}
    for command in commands:
        p = command.payload
        # Unknown (0): nothing is known to be in the log yet, so nothing moves.
        seq = min(p.seq, last.get(p.receiver_id, 0))
        move = WatermarkMove(p.kind, p.receiver_kind, p.receiver_id, p.reader_id, p.thread_id, seq)
        slot = (move.kind, move.receiver_id, move.field)
        if slot not in highest or highest[slot].seq < move.seq:
            highest[slot] = move
    moves = list(highest.values())
    await repository.store_watermarks(moves)
    previous = await repository.cache_watermarks(moves)
    current = {
        (m.kind, m.receiver_id, m.field): max(m.seq, before)
        for m, before in zip(moves, previous, strict=True)
    }

    advanced = [(m, before) for m, before in zip(moves, previous, strict=True) if m.seq > before]
    senders = await repository.senders_between(
        [(m.receiver_id, before, m.seq) for m, before in advanced]
    )
    audiences: list[set[str]] = []
    for (move, _), sender_ids in zip(advanced, senders, strict=True):
        if move.receiver_kind == "user" and move.kind == "read":
            sender_ids = {move.thread_id}  # a direct read concerns one peer's messages
        audiences.append(sender_ids - {move.reader_id})
    # Receipts never cross a block, either way (docs/realtime.md, "Blocks").
    blocked = await repository.blocked_either_way(
        sorted(
            {
                (move.reader_id, s)
                for (move, _), a in zip(advanced, audiences, strict=True)
                for s in a
            }
        )
    )
    for (move, _), audience in zip(advanced, audiences, strict=True):
        WATERMARKS_ADVANCED.labels(move.kind).inc()
        for sender_id in sorted(audience):
            if (move.reader_id, sender_id) in blocked:
                continue
            RECEIPTS_EMITTED.inc()
            outbox.emit(
                RECEIPTS_EVENTS,
                sender_id,
                ReceiptChanged.of(
                    ReceiptChangedPayload(
                        sender_id=sender_id,
                        reader_id=move.reader_id,
                        receiver_kind=move.receiver_kind,  # type: ignore[arg-type]
                        receiver_id=move.receiver_id,
                        thread_id=move.thread_id,
                        kind=move.kind,  # type: ignore[arg-type]
                        up_to_seq=move.seq,
                    )
                ),
            )

    for command in commands:
        p = command.payload
        read_field = p.reader_id if p.receiver_kind == "group" else p.thread_id
        read_seq = current.get(("read", p.receiver_id, read_field), 0)
        delivered_seq = current.get(("delivered", p.receiver_id, p.reader_id), 0)
        outbox.reply(
            command,
            WatermarkView(
                receiver_id=p.receiver_id,
                reader_id=p.reader_id,
                thread_id=p.thread_id,
                delivered_seq=max(delivered_seq, read_seq),
                read_seq=read_seq,
            ),
        )
    return [move for move, _ in advanced]


async def push_receipts(
    receipts: Sequence[ReceiptChangedPayload], *, redis: Redis, keys: RedisKeys
) -> None:
    pushes = [
        ([r.sender_id], {"type": "receipt", "receipt": r.model_dump(mode="json")}) for r in receipts
    ]
    await publish_frames(redis, keys, pushes)


async def push_group_changes(
    events: Sequence[Envelope],
    *,
    repository: DeliveryRepository,
    redis: Redis,
    keys: RedisKeys,
) -> None:
    group_ids = [
        e.payload.group_id for e in events if not isinstance(e, UserBlocked | UserUnblocked)
    ]
    members = await repository.current_members(group_ids)
    pushes: list[tuple[list[str], dict[str, Any]]] = []
    for event in events:
        payload = event.payload
        if isinstance(event, UserBlocked | UserUnblocked):
            audience = {payload.blocker_id}
        else:
            audience = set(members.get(payload.group_id, ()))
            audience.update(getattr(payload, "member_ids", ()))
            audience.update(m.user_id for m in getattr(payload, "members", ()))
            for name in ("user_id", "owner_id"):
                if isinstance(getattr(payload, name, None), str):
                    audience.add(getattr(payload, name))
        frame = {"type": "group", "event": event.type, "payload": payload.model_dump(mode="json")}
        pushes.append((sorted(audience), frame))
    await publish_frames(redis, keys, pushes)

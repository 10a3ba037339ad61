"""message_service handlers: a batch of SendMessage commands in, MessageAccepted out.

`handle_send_batch` is the consumer loop's batch handler (bound to its
dependencies in app.py). Per batch: validate every command against the users and
groups projections in one Redis round trip; accept the valid ones
(message_service.sequencing: dedupe, seq, ledger, counters); add them to the
recent-messages cache; then emit MessageAccepted (key receiver_id) and reply.
The loop publishes the events (acknowledged) before the replies, and commits
after both, so a 201 means the event is durable in Kafka.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter
from redis.asyncio import Redis

from libs.bus.consumer import Delivery
from libs.bus.outbox import Outbox
from libs.contracts.conversations import AppendEvent, ChangeMessage, ConversationEvent
from libs.contracts.keys import RedisKeys
from libs.contracts.messages import (
    MessageAccepted,
    MessageAcceptedPayload,
    MessageView,
    SendMessage,
    SendMessagePayload,
)
from libs.contracts.topics import MESSAGES_COMMANDS, MESSAGES_EVENTS
from libs.errors import DomainError, Forbidden, NotFound, Unavailable
from libs.logging import get_logger
from libs.readmodels.messages import RecentCache
from message_service.changes import plan_changes
from message_service.message_state import MessageStates
from message_service.repository import LogCommand, entry_key, ledger_document
from message_service.sequencing import Sequencer

log = get_logger(__name__)

MESSAGES_ACCEPTED = Counter(
    "messenger_messages_accepted_total", "Messages given a new seq by message_service"
)
MESSAGES_REPLAYED = Counter(
    "messenger_messages_replayed_total",
    "Commands answered with an earlier message (retry by client_msg_id or redelivery)",
)
MESSAGES_REJECTED = Counter(
    "messenger_messages_rejected_total", "Commands refused by validation", ["code"]
)
CHANGES_APPLIED = Counter(
    "messenger_message_changes_applied_total", "Edits, deletes and reactions applied", ["action"]
)
CHANGES_REJECTED = Counter("messenger_message_changes_rejected_total", "Changes refused", ["code"])

USERS_PROJECTION = "users"
GROUPS_PROJECTION = "groups"


@dataclass(frozen=True, slots=True)
class Validator:
    """Checks SendMessage commands against the users and groups projections in Redis."""

    redis: Redis
    keys: RedisKeys

    async def check(self, commands: Sequence[SendMessagePayload]) -> list[DomainError | None]:
        """One pipelined round trip for the whole batch; None means valid."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(self.keys.projection_ready(USERS_PROJECTION))
            pipe.exists(self.keys.projection_ready(GROUPS_PROJECTION))
            for command in commands:
                if command.receiver_kind == "user":
                    pipe.hget(self.keys.user_profile(command.receiver_id), "deleted")
                    pipe.sismember(self.keys.blocks(command.receiver_id), command.sender_id)
                else:
                    pipe.exists(self.keys.group(command.receiver_id))
                    pipe.hexists(self.keys.group_members(command.receiver_id), command.sender_id)
            users_ready, groups_ready, *answers = await pipe.execute()
        verdicts: list[DomainError | None] = []
        for index, command in enumerate(commands):
            first, second = answers[2 * index], answers[2 * index + 1]
            verdicts.append(_verdict(command, bool(users_ready), bool(groups_ready), first, second))
        return verdicts


def _verdict(
    command: SendMessagePayload,
    users_ready: bool,
    groups_ready: bool,
    first: object,
    second: object,
) -> DomainError | None:
    if command.receiver_kind == "user":
        if not users_ready or not groups_ready:
            return Unavailable("user and block data is being rebuilt; retry shortly")
        if first != "0":
            return NotFound("no such user", code="receiver_not_found")
        if second:
            return Forbidden("the receiver does not accept your messages", code="blocked")
        return None
    if not groups_ready:
        return Unavailable("group data is being rebuilt; retry shortly")
    if not first:
        return NotFound("no such group", code="receiver_not_found")
    if not second:
        return Forbidden("you are not a member of this group", code="not_a_member")
    return None


async def handle_send_batch(
    deliveries: Sequence[Delivery],
    outbox: Outbox,
    *,
    validator: Validator,
    sequencer: Sequencer,
    cache: RecentCache,
    states: MessageStates,
    edit_window_s: float,
) -> None:
    """Accept a batch of SendMessage, ChangeMessage and AppendEvent commands.

    Changes are decided first (message_service.changes), then every new entry of
    the batch (messages, and the events of changes and appends) is sequenced at
    once, the changed state is saved, the caches are written, and the events and
    replies go out.
    """
    requests = [d.message for d in deliveries if isinstance(d.message, SendMessage)]
    changes = [d.message for d in deliveries if isinstance(d.message, ChangeMessage)]
    appends = [d.message for d in deliveries if isinstance(d.message, AppendEvent)]
    if not (requests or changes or appends):
        return
    try:
        await _handle(
            requests, changes, appends, outbox, validator, sequencer, cache, states, edit_window_s
        )
    except BaseException:
        states.forget()  # it may hold changes that were not saved: the retry reads MongoDB
        raise


async def _handle(
    requests: list[SendMessage],
    changes: list[ChangeMessage],
    appends: list[AppendEvent],
    outbox: Outbox,
    validator: Validator,
    sequencer: Sequencer,
    cache: RecentCache,
    states: MessageStates,
    edit_window_s: float,
) -> None:
    verdicts = await validator.check([r.payload for r in requests]) if requests else []
    refused = [r.payload for r, v in zip(requests, verdicts, strict=True) if v is not None]
    if refused:
        # A redelivered send whose first attempt wrote its ledger entry (and took its
        # seq) before failing is accepted, whatever the check says now (a block, a
        # leave, a projection being rebuilt): a seq once taken always resolves to its
        # message, so the receiver's log never keeps a hole that sync would stop at.
        taken = await sequencer.already_accepted(refused)
        verdicts = [
            None if v is not None and r.payload.message_id in taken else v
            for r, v in zip(requests, verdicts, strict=True)
        ]
    valid = [r for r, v in zip(requests, verdicts, strict=True) if v is None]
    plan = await plan_changes(changes, states, edit_window_s=edit_window_s)
    entries: list[LogCommand] = [r.payload for r in valid]
    entries += [a.payload for a in appends]
    entries += plan.own_events
    # The events and the new state are written at once: if only the state lands, the
    # retry finds the change applied and sequences its events then (replay path).
    acceptances, _ = await asyncio.gather(
        sequencer.accept(entries), states.save(list(plan.changed_docs.values()))
    )
    sequencer.forget_entries(
        {doc["message_id"] for doc in plan.changed_docs.values() if doc.get("deleted")}
    )
    sends = acceptances[: len(valid)]
    accepted = dict(zip((r.id for r in valid), sends, strict=True))
    unique = {a.message.message_id: a.message for a in sends}  # type: ignore[union-attr]
    fresh = {a.message.message_id for a in sends if a.fresh}  # type: ignore[union-attr]
    # New messages are changed soonest: their ledger entries start in memory.
    states.remember(
        ledger_document(entry_key(r.payload), accepted[r.id].message)
        for r in valid
        if accepted[r.id].fresh
    )
    events = {
        a.message.event_id: a.message  # type: ignore[union-attr]
        for a in acceptances[len(valid) :]
    }
    if unique:
        await cache.add(list(unique.values()), fresh)  # type: ignore[arg-type]
    await cache.add_events(list(events.values()))  # type: ignore[arg-type]
    await cache.rewrite_messages(plan.views_to_cache())
    await cache.purge_edits(
        [e for e in events.values() if e.body.type == "message_deleted"]  # type: ignore[union-attr]
    )

    for event in events.values():
        outbox.emit(MESSAGES_EVENTS, event.receiver_id, ConversationEvent.of(event))
    for other, mirror in plan.mirrors:
        outbox.emit(MESSAGES_COMMANDS, other, AppendEvent.of(mirror))
    for command, answer in zip(changes, plan.answers, strict=True):
        if isinstance(answer, DomainError):
            outbox.reply_error(command, answer)
            CHANGES_REJECTED.labels(answer.code).inc()
        else:
            outbox.reply(command, answer.view.stored())
            CHANGES_APPLIED.labels(command.payload.action).inc(int(answer.changed))

    emitted: set[str] = set()
    for request, verdict in zip(requests, verdicts, strict=True):
        if verdict is not None:
            outbox.reply_error(request, verdict)
            continue
        message = accepted[request.id].message
        assert isinstance(message, MessageAcceptedPayload)
        if message.message_id not in emitted:
            # Re-emitted for replays too: the first emission may not have been published.
            emitted.add(message.message_id)
            outbox.emit(
                MESSAGES_EVENTS,
                message.receiver_id,
                MessageAccepted.of(message, correlation_id=request.correlation_id),
            )
        outbox.reply(request, {**MessageView.of(message).stored(), "status": "sent"})
    MESSAGES_ACCEPTED.inc(len(fresh))
    MESSAGES_REPLAYED.inc(len(sends) - len(fresh))
    for verdict in verdicts:
        if verdict is not None:
            MESSAGES_REJECTED.labels(verdict.code).inc()

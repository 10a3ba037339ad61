"""notifier's handlers: accepted messages in, at most one notification per burst out.

`handle_batch` (the consumer loop's batch handler) passes the batch's accepted
messages to `consider_messages`: resolve each message's recipients, keep those
with no connected socket and no mute on the conversation, and add the message to
the (recipient, conversation) burst. It returns at once; the
batch is committed then, so a notifier that crashes inside a window loses that
window's notification (never a message: sync still has it).

`notify` (per burst, when its window closes): if the user is still offline (a
socket opened during the window got the messages), build the payload and send
it to each of the user's targets concurrently, removing those that are gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter

from libs.bus.consumer import Delivery
from libs.bus.outbox import Outbox
from libs.contracts.messages import MessageAccepted, MessageAcceptedPayload
from libs.logging import get_logger
from notifier.coalescing import Burst, Coalescer
from notifier.repository import NotifierRepository, conversation_of
from notifier.sending import Outcome, TargetSender, encode

log = get_logger(__name__)

CONSIDERED = Counter(
    "messenger_notifier_recipients_total",
    "Recipients of accepted messages, by what the notifier did",
    ["decision"],
)
NOTIFICATIONS = Counter(
    "messenger_notifier_notifications_total", "Notifications by outcome", ["outcome"]
)
TARGETS_REMOVED = Counter(
    "messenger_notifier_targets_removed_total", "Targets that answered 404/410"
)


@dataclass(frozen=True, slots=True)
class PayloadPolicy:
    previews: bool
    preview_chars: int


def notification_payload(burst: Burst, policy: PayloadPolicy) -> dict[str, Any]:
    """What a target receives (docs/notifications.md). Without previews: which
    conversation has how many new messages, nothing of what they say."""
    latest = burst.latest
    if latest.receiver_kind == "group":
        conversation = {"kind": "group", "id": latest.receiver_id}
    else:
        conversation = {"kind": "user", "id": latest.sender_id}
    payload: dict[str, Any] = {
        "type": "messages",
        "user_id": burst.user_id,
        "conversation": conversation,
        "count": len(burst.messages),
        "latest_message_id": latest.message_id,
        "latest_at": latest.created_at.isoformat().replace("+00:00", "Z"),
    }
    if policy.previews:
        payload["sender_id"] = latest.sender_id
        payload["preview"] = latest.content[: policy.preview_chars]
        payload["attachments"] = len(latest.attachments)
    return payload


async def handle_batch(
    deliveries: Sequence[Delivery],
    outbox: Outbox,
    *,
    repository: NotifierRepository,
    coalescer: Coalescer,
    max_age: timedelta,
) -> None:
    messages = [d.message.payload for d in deliveries if isinstance(d.message, MessageAccepted)]
    await consider_messages(messages, repository=repository, coalescer=coalescer, max_age=max_age)


async def consider_messages(
    messages: Sequence[MessageAcceptedPayload],
    *,
    repository: NotifierRepository,
    coalescer: Coalescer,
    max_age: timedelta,
) -> None:
    now = datetime.now(UTC)
    fresh = [m for m in messages if now - m.created_at <= max_age]
    CONSIDERED.labels("too_old").inc(len(messages) - len(fresh))
    if not fresh:
        return
    recipients = await repository.recipients(fresh)
    everyone = {u for users in recipients.values() for u in users}
    online = await repository.online(everyone)
    # Mute matters only to whom a notification could go: the offline recipients.
    offline = {
        message.message_id: [u for u in recipients[message.message_id] if u not in online]
        for message in fresh
    }
    pairs = {(u, conversation_of(m)) for m in fresh for u in offline[m.message_id]}
    muted = await repository.muted(pairs)
    queued = muted_count = 0
    for message in fresh:
        conversation = conversation_of(message)
        for user_id in offline[message.message_id]:
            if (user_id, conversation) in muted:
                muted_count += 1
            else:
                queued += 1
                coalescer.add(user_id, conversation, message)
    # One counter update per outcome and batch: a group message has thousands.
    CONSIDERED.labels("online").inc(
        sum(len(recipients[m.message_id]) for m in fresh) - queued - muted_count
    )
    CONSIDERED.labels("muted").inc(muted_count)
    CONSIDERED.labels("queued").inc(queued)


async def notify(
    burst: Burst,
    *,
    repository: NotifierRepository,
    sender: TargetSender,
    policy: PayloadPolicy,
) -> None:
    if burst.user_id in await repository.online([burst.user_id]):
        NOTIFICATIONS.labels("came_online").inc()
        return
    targets = await repository.targets(burst.user_id)
    if not targets:
        NOTIFICATIONS.labels("no_target").inc()
        return
    body = encode(notification_payload(burst, policy))
    outcomes = await asyncio.gather(*(sender.send(t, body) for t in targets))
    for target, outcome in zip(targets, outcomes, strict=True):
        NOTIFICATIONS.labels(outcome.value).inc()
        if outcome is Outcome.GONE:
            await repository.remove_target(burst.user_id, target["id"])
            TARGETS_REMOVED.inc()
            log.info("push target removed", user_id=burst.user_id, target_id=target["id"])

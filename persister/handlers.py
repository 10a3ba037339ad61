"""persister handlers: MessageAccepted batches into sharded MongoDB.

`persist_batch` is the consumer loop's batch handler: it writes the batch's
messages (deduplicated by message_id) with one unordered insert per shard and
returns once every shard acknowledged; the loop commits offsets only then. A
shard that is down makes the insert raise: the loop retries the batch with
backoff and commits nothing, so nothing is lost; per receiver, order is kept
because a receiver's records are one partition and later batches wait.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter

from libs.bus.consumer import Delivery
from libs.bus.outbox import Outbox
from libs.contracts.conversations import ConversationEvent, ConversationEventPayload
from libs.contracts.messages import MessageAccepted, MessageAcceptedPayload
from libs.logging import get_logger
from persister.changes import EventStore
from persister.repository import MessageStore

log = get_logger(__name__)

MESSAGES_STORED = Counter("messenger_messages_stored_total", "Messages written to MongoDB")
CHANGES_APPLIED = Counter(
    "messenger_message_changes_stored_total", "Edits, deletes and reactions applied to storage"
)
DUPLICATES_SKIPPED = Counter(
    "messenger_messages_duplicates_total", "Replayed messages already stored (no-ops)"
)


async def persist_batch(
    deliveries: Sequence[Delivery], outbox: Outbox, *, store: MessageStore, events: EventStore
) -> None:
    unique: dict[str, MessageAcceptedPayload] = {}
    logged: dict[str, ConversationEventPayload] = {}
    for delivery in deliveries:
        if isinstance(delivery.message, MessageAccepted):
            unique.setdefault(delivery.message.payload.message_id, delivery.message.payload)
        elif isinstance(delivery.message, ConversationEvent):
            logged.setdefault(delivery.message.payload.event_id, delivery.message.payload)
    if unique:
        await _persist_messages(unique, len(deliveries) - len(logged), store)
    if logged:
        # After the batch's messages: a change may target a message of the same batch.
        await events.insert(list(logged.values()))
        CHANGES_APPLIED.inc(await events.apply_to_messages(list(logged.values())))


async def _persist_messages(
    unique: dict[str, MessageAcceptedPayload], records: int, store: MessageStore
) -> None:
    duplicates = await store.insert(list(unique.values()))
    MESSAGES_STORED.inc(len(unique) - duplicates)
    DUPLICATES_SKIPPED.inc(duplicates + records - len(unique))
    if duplicates:
        log.info("replayed messages skipped", duplicates=duplicates, batch=len(unique))

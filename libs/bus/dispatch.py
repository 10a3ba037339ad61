"""Per-message dispatch: a table maps each message type to exactly one handler.

For services whose handlers take one command at a time (accounts, groups), this
turns the table into the consumer loop's batch handler. Records with the same
key run in order; different keys run concurrently (a slow password hash for one
user does not hold up another). A handler returns the reply body (or None) and
may raise DomainError, which becomes an error reply; any other exception fails
the batch, which is then redelivered (handlers are idempotent).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from libs.bus.consumer import BatchHandler, Delivery
from libs.bus.outbox import Outbox
from libs.contracts.envelope import Envelope
from libs.errors import DomainError
from libs.logging import get_logger

log = get_logger(__name__)

MessageHandler = Callable[[Any, Outbox], Awaitable[BaseModel | dict[str, Any] | None]]


def dispatch_each(table: Mapping[type[Envelope], MessageHandler]) -> BatchHandler:
    """A batch handler that calls `table[type(message)]` for each message."""

    async def run_in_order(deliveries: list[Delivery], outbox: Outbox) -> None:
        for delivery in deliveries:
            message = delivery.message
            handler = table.get(type(message))
            if handler is None:
                log.warning(
                    "no handler for message type; skipped",
                    type=message.type,
                    topic=delivery.topic,
                    offset=delivery.offset,
                )
                continue
            try:
                result = await handler(message, outbox)
            except DomainError as error:
                outbox.reply_error(message, error)
            else:
                outbox.reply(message, result)

    async def handle_batch(deliveries: Sequence[Delivery], outbox: Outbox) -> None:
        by_key: dict[str | None, list[Delivery]] = defaultdict(list)
        for delivery in deliveries:
            by_key[delivery.key].append(delivery)
        if len(by_key) == 1:
            await run_in_order(next(iter(by_key.values())), outbox)
            return
        # Each key gets its own outbox so replies keep per-key order; merged after.
        outboxes = [Outbox() for _ in by_key]
        await asyncio.gather(
            *(
                run_in_order(group, box)
                for group, box in zip(by_key.values(), outboxes, strict=True)
            )
        )
        for box in outboxes:
            outbox.events.extend(box.events)
            outbox.replies.extend(box.replies)

    return handle_batch

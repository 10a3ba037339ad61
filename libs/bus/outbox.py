"""What a batch of handlers wants published, sent only after their effects are done.

Handlers never talk to Kafka. They put events and replies in the batch's outbox;
the consumer loop publishes events first and waits for their acknowledgement,
then replies, then commits offsets. So a reply never claims an effect whose
event could still be lost, and an offset is never committed before both.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from libs.bus.producer import Producer
from libs.contracts.envelope import Envelope, Reply, ReplyPayload
from libs.errors import DomainError


@dataclass
class Outbox:
    """Records one batch publishes, in the order they were added per phase."""

    events: list[tuple[str, str, Envelope]] = field(default_factory=list)
    replies: list[tuple[str, str, Envelope]] = field(default_factory=list)

    def emit(self, topic: str, key: str, event: Envelope) -> None:
        """Publish `event` on logical `topic` keyed by `key`, after the batch's effects."""
        self.events.append((topic, key, event))

    def reply(self, request: Envelope, result: BaseModel | dict[str, Any] | None) -> None:
        """Answer `request` with a success; a no-op when nobody asked for an answer."""
        if not request.reply_to:
            return
        body = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
        self._add_reply(request, ReplyPayload(ok=True, result=body))

    def reply_error(self, request: Envelope, error: DomainError) -> None:
        if not request.reply_to:
            return
        self._add_reply(request, ReplyPayload(ok=False, error=error.as_dict()))

    def _add_reply(self, request: Envelope, payload: ReplyPayload) -> None:
        assert request.reply_to is not None
        correlation = request.correlation_id or request.id
        reply = Reply.of(payload, correlation_id=correlation)
        self.replies.append((request.reply_to, correlation, reply))

    async def publish(self, producer: Producer) -> None:
        """Events, acknowledged; then replies, acknowledged. Raises if Kafka refuses."""
        if self.events:
            await producer.send_all(self.events)
        if self.replies:
            futures = [
                await producer.send(topic, key, message, physical_topic=True)
                for topic, key, message in self.replies
            ]
            await asyncio.gather(*futures)
        self.events.clear()
        self.replies.clear()

"""Request-reply over Kafka for the gateway (README.md, Architecture).

Each gateway instance owns a one-partition reply topic, `gateway.replies.<instance>`,
created at start and deleted at a clean stop. A request carries a correlation id
and that topic as `reply_to`; the owning service answers there once the effect is
durable. A reply that does not come within the timeout is a ReplyTimeout (504):
the command may still take effect, which is why commands are idempotent and
clients retry with the same client-side ids.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from libs.bus.admin import delete_topics, ensure_topics
from libs.bus.consumer import IDLE_FETCH_WAIT_MS
from libs.bus.producer import Producer
from libs.contracts.envelope import Codec, DecodeError, Envelope, Reply
from libs.contracts.topics import GATEWAY_REPLIES_PREFIX, namespaced
from libs.errors import ReplyTimeout, error_from_dict
from libs.ids import new_id
from libs.logging import get_logger

log = get_logger(__name__)
_REPLY_CODEC = Codec(Reply)


class RequestClient:
    """Sends commands and awaits their replies. Open with `start()`, close with `stop()`."""

    def __init__(
        self,
        producer: Producer,
        *,
        bootstrap: str,
        namespace: str,
        instance_id: str,
        default_timeout_s: float = 10.0,
        replication: int = 1,
    ) -> None:
        self.producer = producer
        #: The reply topic's replication factor: with 1, losing the broker that holds
        #: it stops every request of this gateway until that broker is back.
        self._replication = replication
        self.reply_topic = namespaced(GATEWAY_REPLIES_PREFIX + instance_id, namespace)
        self.default_timeout_s = default_timeout_s
        self._bootstrap = bootstrap
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await ensure_topics(
            self._bootstrap,
            [self.reply_topic],
            partitions=1,
            replication=self._replication,
            config={"retention.ms": str(10 * 60 * 1000)},
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=IDLE_FETCH_WAIT_MS,
        )
        await consumer.start()
        tp = TopicPartition(self.reply_topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)  # resolve now, so no reply can slip past the seek
        self._consumer = consumer
        self._task = asyncio.create_task(self._read_replies(), name="gateway-replies")

    async def stop(self, *, delete_topic: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ReplyTimeout("gateway is shutting down"))
        self._pending.clear()
        if delete_topic:
            with contextlib.suppress(Exception):
                await delete_topics(self._bootstrap, [self.reply_topic], timeout_s=5)

    @property
    def healthy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _read_replies(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    try:
                        reply = _REPLY_CODEC.decode(record.value)
                    except DecodeError as exc:
                        log.warning("undecodable reply ignored", error=str(exc)[:300])
                        continue
                    future = self._pending.pop(reply.correlation_id or "", None)
                    if future is not None and not future.done():
                        future.set_result(reply)  # type: ignore[arg-type]

    async def request(
        self, topic: str, key: str, message: Envelope, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Publish `message` and return the reply's result; raise its DomainError."""
        correlation_id = message.correlation_id or new_id()
        message = message.model_copy(
            update={"correlation_id": correlation_id, "reply_to": self.reply_topic}
        )
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            await self.producer.send_and_wait(topic, key, message)
            reply = await asyncio.wait_for(future, timeout_s or self.default_timeout_s)
        except TimeoutError:
            raise ReplyTimeout(
                "the service did not answer in time; the request may still take effect"
            ) from None
        finally:
            self._pending.pop(correlation_id, None)
        if reply.payload.ok:
            return reply.payload.result or {}
        raise error_from_dict(reply.payload.error or {})

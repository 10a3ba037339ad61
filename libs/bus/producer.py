"""The idempotent Kafka producer every service publishes through.

enable_idempotence with acks=all: a record acknowledged by `send(...)`'s future is
on every in-sync replica, and retries never duplicate it within a partition.
Topic names given here are logical (libs.contracts.topics); the namespace is
applied in one place, here, so handlers never see physical names.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from libs.contracts.envelope import Envelope
from libs.contracts.topics import namespaced
from libs.settings import ConfigurationError


class Producer:
    """Owns one AIOKafkaProducer; open with `start()`, close with `stop()`."""

    def __init__(
        self,
        bootstrap: str,
        namespace: str = "",
        *,
        linger_ms: int = 2,
        client_id: str | None = None,
        max_request_size: int = 1_048_576,
    ) -> None:
        self.namespace = namespace
        self._bootstrap = bootstrap
        self._options: dict[str, object] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "enable_idempotence": True,
            "acks": "all",
            "linger_ms": linger_ms,
            "max_request_size": max_request_size,
            "request_timeout_ms": 30_000,
        }
        self._producer = AIOKafkaProducer(**self._options)  # type: ignore[arg-type]
        self.started = False

    async def start(self, timeout_s: float = 30.0) -> None:
        """Connect, retrying until `timeout_s`; then a one-line ConfigurationError.

        aiokafka logs every refused connection at error level; while we are still
        retrying at start those lines are noise, so they are held back until the
        outcome is known.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        kafka_log = logging.getLogger("aiokafka")
        previous_level = kafka_log.level
        kafka_log.setLevel(logging.CRITICAL)
        try:
            while True:
                try:
                    await self._producer.start()
                    self.started = True
                    return
                except (KafkaConnectionError, OSError) as exc:
                    await self._producer.stop()
                    if loop.time() >= deadline:
                        raise ConfigurationError(
                            f"Kafka at {self._bootstrap} is unreachable: {exc}"
                        ) from None
                    await asyncio.sleep(0.5)
                    self._producer = AIOKafkaProducer(**self._options)  # type: ignore[arg-type]
        finally:
            kafka_log.setLevel(previous_level)

    async def stop(self) -> None:
        """Flush what is buffered and close."""
        if self.started:
            self.started = False
            await self._producer.stop()

    def physical(self, topic: str) -> str:
        return namespaced(topic, self.namespace)

    async def send(
        self,
        topic: str,
        key: str,
        message: Envelope | bytes,
        *,
        headers: list[tuple[str, bytes]] | None = None,
        physical_topic: bool = False,
    ) -> asyncio.Future[object]:
        """Queue a record; the returned future resolves once the broker acknowledged it.

        `physical_topic=True` sends to `topic` as given (reply topics already are).
        """
        value = message if isinstance(message, bytes) else message.to_bytes()
        target = topic if physical_topic else self.physical(topic)
        return await self._producer.send(target, value, key=key.encode(), headers=headers)

    async def send_and_wait(
        self, topic: str, key: str, message: Envelope | bytes, *, physical_topic: bool = False
    ) -> None:
        future = await self.send(topic, key, message, physical_topic=physical_topic)
        await future

    async def send_all(self, records: Iterable[tuple[str, str, Envelope]]) -> None:
        """Send many records and wait until every one is acknowledged."""
        futures = [await self.send(topic, key, message) for topic, key, message in records]
        if futures:
            await asyncio.gather(*futures)

    async def partitions_for(self, topic: str) -> set[int]:
        return await self._producer.partitions_for(self.physical(topic))

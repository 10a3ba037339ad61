"""The consumer loop: decode, handle a batch, publish its outbox, then commit.

Guarantees (README.md, Architecture), in this order for every batch:
1. records that cannot be decoded go to `<topic>.dlq` with the error (and are
   then committed with the batch: a poison record never blocks its partition);
2. the batch handler runs and makes its effects durable;
3. the outbox is published: events acknowledged, then replies;
4. offsets `last + 1` are committed per partition.
If 2 or 3 raises, nothing is committed: each partition is rewound to the batch's
first offset and the batch is redelivered after a backoff, for as long as it
takes (a MongoDB shard that is down is waited out, not skipped).

Batching: records are gathered until `max_batch` or `linger_ms` after the first
one, whichever comes first (a persister flushes at N messages or T ms).

Rebalance: the listener waits for the batch in hand to finish and commit before
partitions move; records fetched for partitions that were revoked meanwhile are
dropped before handling (their new owner reads them from the committed offset).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from libs.bus.outbox import Outbox
from libs.bus.producer import Producer
from libs.contracts.envelope import Codec, DecodeError, Envelope
from libs.contracts.topics import dead_letter_topic, namespaced
from libs.logging import get_logger
from libs.metrics import (
    BATCH_FAILURES,
    BATCH_SECONDS,
    BATCH_SIZE,
    RECORDS_CONSUMED,
    RECORDS_DEAD_LETTERED,
)

log = get_logger(__name__)

#: How long the broker holds an empty fetch. A fetch is answered as soon as a record
#: arrives (fetch.min.bytes 1), so this costs no latency; it sets how often an idle
#: consumer wakes itself and the broker (at rest: ~2 fetches/s instead of 10-20).
IDLE_FETCH_WAIT_MS = 500


@dataclass(frozen=True, slots=True)
class Delivery:
    """One decoded record and where it came from."""

    message: Envelope
    topic: str  # logical topic name
    partition: int
    offset: int
    key: str | None


BatchHandler = Callable[[Sequence[Delivery], Outbox], Awaitable[None]]
PartitionsCallback = Callable[[set[tuple[str, int]]], Awaitable[None]]


class _Listener(ConsumerRebalanceListener):
    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Wait for the batch in hand: it finishes, publishes and commits first.
        async with self._loop.processing:
            if self._loop.on_revoked and revoked:
                await self._loop.on_revoked({self._loop.logical(tp) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._loop.assigned_once.set()
        if self._loop.on_assigned and assigned:
            await self._loop.on_assigned({self._loop.logical(tp) for tp in assigned})


class ConsumerLoop:
    """One consumer group member running a batch handler over some topics."""

    def __init__(
        self,
        *,
        group: str,
        topics: Sequence[str],
        codec: Codec,
        handler: BatchHandler,
        producer: Producer,
        bootstrap: str,
        namespace: str = "",
        max_batch: int = 500,
        linger_ms: float = 0,
        on_assigned: PartitionsCallback | None = None,
        on_revoked: PartitionsCallback | None = None,
        max_retry_backoff_s: float = 5.0,
        fetch_max_wait_ms: int = IDLE_FETCH_WAIT_MS,
        group_instance_id: str | None = None,
    ) -> None:
        self.group = group
        self.topics = list(topics)
        self.codec = codec
        self.handler = handler
        self.producer = producer
        self.namespace = namespace
        self.max_batch = max_batch
        self.linger_s = linger_ms / 1000
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self.max_retry_backoff_s = max_retry_backoff_s
        self.processing = asyncio.Lock()
        self.assigned_once = asyncio.Event()
        self._physical = {namespaced(t, namespace): t for t in self.topics}
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_batch,
            fetch_max_wait_ms=fetch_max_wait_ms,
            isolation_level="read_uncommitted",
            group_instance_id=group_instance_id,
        )
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.healthy = False

    def logical(self, tp: TopicPartition) -> tuple[str, int]:
        return self._physical.get(tp.topic, tp.topic), tp.partition

    async def start(self) -> None:
        """Join the group and start the loop in a background task."""
        await self._consumer.start()
        self._consumer.subscribe(list(self._physical), listener=_Listener(self))
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self.group}")
        self.healthy = True

    async def stop(self) -> None:
        """Stop consuming: finish and commit the batch in hand, then leave the group."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=30)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            except Exception:  # the loop had crashed, and said so: still leave the group
                pass
        self.healthy = False
        await self._consumer.stop()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The loop's task once started (a supervisor watches it)."""
        return self._task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                records = await self._gather()
                if records:
                    await self._process_until_done(records)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.healthy = False
            log.exception("consumer loop crashed", group=self.group)
            raise

    async def _gather(self) -> list:
        """Fetch up to max_batch records, lingering up to linger_ms after the first."""
        batch: list = []
        deadline: float | None = None
        while len(batch) < self.max_batch and not self._stopping.is_set():
            if deadline is None:
                timeout_ms = 200
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                timeout_ms = max(1, int(remaining * 1000))
            fetched = await self._consumer.getmany(
                timeout_ms=timeout_ms, max_records=self.max_batch - len(batch)
            )
            for records in fetched.values():
                batch.extend(records)
            if batch and deadline is None:
                if self.linger_s <= 0:
                    break
                deadline = time.monotonic() + self.linger_s
            if not fetched and batch:
                break
        return batch

    async def _process_until_done(self, records: list) -> None:
        backoff = 0.1
        while True:
            try:
                # The lock is held per attempt, not across the backoff, so a rebalance
                # can take partitions away from a batch that keeps failing.
                async with self.processing:
                    assignment = self._consumer.assignment()
                    records = [
                        r for r in records if TopicPartition(r.topic, r.partition) in assignment
                    ]
                    if not records:
                        return
                    await self._process(records)
                return
            except (CommitFailedError, KafkaError) as exc:
                if isinstance(exc, CommitFailedError):
                    # The group moved on; the new owner redelivers from the last commit.
                    log.warning("commit failed after rebalance", group=self.group, error=str(exc))
                    return
                error: Exception = exc
            except Exception as exc:
                error = exc
            BATCH_FAILURES.labels(self.group).inc()
            log.warning(
                "batch failed; will redeliver",
                group=self.group,
                error=f"{type(error).__name__}: {error}",
                retry_in_s=round(backoff, 2),
            )
            if self._stopping.is_set():
                return  # nothing committed: the next owner redelivers
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_retry_backoff_s)

    async def _process(self, records: list) -> None:
        started = time.perf_counter()
        deliveries: list[Delivery] = []
        dead: list = []
        for record in records:
            topic = self._physical.get(record.topic, record.topic)
            try:
                message = self.codec.decode(record.value)
            except DecodeError as exc:
                dead.append((record, topic, str(exc)))
                continue
            key = record.key.decode("utf-8", "replace") if record.key is not None else None
            deliveries.append(Delivery(message, topic, record.partition, record.offset, key))

        if dead:
            await self._dead_letter(dead)
        outbox = Outbox()
        if deliveries:
            await self.handler(deliveries, outbox)
        await outbox.publish(self.producer)

        offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, -1), record.offset + 1)
        await self._consumer.commit(offsets)

        BATCH_SIZE.labels(self.group).observe(len(records))
        BATCH_SECONDS.labels(self.group).observe(time.perf_counter() - started)
        for delivery in deliveries:
            RECORDS_CONSUMED.labels(self.group, delivery.topic).inc()

    async def _dead_letter(self, dead: list) -> None:
        futures = []
        for record, topic, error in dead:
            headers = [
                ("error", error.encode()[:4000]),
                ("source_topic", record.topic.encode()),
                ("source_partition", str(record.partition).encode()),
                ("source_offset", str(record.offset).encode()),
                ("consumer_group", self.group.encode()),
            ]
            key = record.key.decode("utf-8", "replace") if record.key is not None else ""
            futures.append(
                await self.producer.send(
                    dead_letter_topic(topic), key, record.value or b"", headers=headers
                )
            )
            RECORDS_DEAD_LETTERED.labels(self.group, topic).inc()
            log.warning(
                "record dead-lettered",
                group=self.group,
                topic=topic,
                partition=record.partition,
                offset=record.offset,
                error=error[:300],
            )
        await asyncio.gather(*futures)

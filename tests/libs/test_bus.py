"""The Kafka bus against the real broker: round trip, commit-after-effect, DLQ, request-reply."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from typing import Literal

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from libs.bus.admin import ensure_topics
from libs.bus.consumer import ConsumerLoop, Delivery
from libs.bus.dispatch import dispatch_each
from libs.bus.outbox import Outbox
from libs.bus.producer import Producer
from libs.bus.request_reply import RequestClient
from libs.contracts.envelope import Codec, Envelope, Payload
from libs.contracts.topics import dead_letter_topic, namespaced
from libs.errors import NotFound, ReplyTimeout
from tests.support import endpoints

TOPIC = "bustest.commands.v1"
EVENTS = "bustest.events.v1"


class PingPayload(Payload):
    n: int


class Ping(Envelope):
    type: Literal["Ping"] = "Ping"
    payload: PingPayload


class Ponged(Envelope):
    type: Literal["Ponged"] = "Ponged"
    payload: PingPayload


@pytest.fixture
async def bus_namespace(infra: None) -> str:
    namespace = "b" + secrets.token_hex(5)
    topics = [TOPIC, EVENTS, dead_letter_topic(TOPIC)]
    await ensure_topics(endpoints.kafka(), [namespaced(t, namespace) for t in topics], partitions=2)
    return namespace


@pytest.fixture
async def producer(bus_namespace: str) -> AsyncIterator[Producer]:
    producer = Producer(endpoints.kafka(), bus_namespace)
    await producer.start()
    yield producer
    await producer.stop()


def make_loop(namespace: str, producer: Producer, handler, group: str) -> ConsumerLoop:  # type: ignore[no-untyped-def]
    return ConsumerLoop(
        group=f"{namespace}.{group}",
        topics=[TOPIC],
        codec=Codec(Ping),
        handler=handler,
        producer=producer,
        bootstrap=endpoints.kafka(),
        namespace=namespace,
        max_batch=50,
        linger_ms=5,
    )


async def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def read_all(topic: str, expected: int, timeout: float = 30.0) -> list:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=endpoints.kafka(),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(records) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
    finally:
        await consumer.stop()
    return records


async def test_round_trip_emits_events_and_commits(bus_namespace: str, producer: Producer) -> None:
    seen: list[int] = []

    async def handle(deliveries: Sequence[Delivery], outbox: Outbox) -> None:
        for delivery in deliveries:
            seen.append(delivery.message.payload.n)
            outbox.emit(
                EVENTS,
                str(delivery.message.payload.n),
                Ponged.of(PingPayload(n=delivery.message.payload.n)),
            )

    loop = make_loop(bus_namespace, producer, handle, "roundtrip")
    await loop.start()
    try:
        await producer.send_all((TOPIC, f"k{i % 5}", Ping.of(PingPayload(n=i))) for i in range(100))
        await wait_for(lambda: len(seen) >= 100)
    finally:
        await loop.stop()
    assert sorted(seen) == list(range(100))
    events = await read_all(namespaced(EVENTS, bus_namespace), 100)
    assert sorted(Codec(Ponged).decode(r.value).payload.n for r in events) == list(range(100))
    # Every partition's committed offset is past everything it held.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=endpoints.kafka(), group_id=f"{bus_namespace}.roundtrip"
    )
    await consumer.start()
    try:
        physical = namespaced(TOPIC, bus_namespace)
        parts = [TopicPartition(physical, p) for p in range(2)]
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            assert await consumer.committed(tp) == ends[tp]
    finally:
        await consumer.stop()


async def test_failed_handler_is_redelivered_and_nothing_is_lost(
    bus_namespace: str, producer: Producer
) -> None:
    attempts = 0
    done: list[int] = []

    async def flaky(deliveries: Sequence[Delivery], outbox: Outbox) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 2:
            raise RuntimeError("storage is down")
        done.extend(d.message.payload.n for d in deliveries)

    loop = make_loop(bus_namespace, producer, flaky, "flaky")
    await loop.start()
    try:
        await producer.send_all((TOPIC, "same-key", Ping.of(PingPayload(n=i))) for i in range(10))
        await wait_for(lambda: len(set(done)) >= 10)
    finally:
        await loop.stop()
    assert attempts >= 3
    assert sorted(set(done)) == list(range(10))
    assert done[: len(set(done))] == sorted(done[: len(set(done))])  # order kept per key


async def test_uncommitted_batch_is_redelivered_to_the_next_member(
    bus_namespace: str, producer: Producer
) -> None:
    """A member that stops while its handler keeps failing commits nothing: the next gets it all."""

    async def always_fails(deliveries: Sequence[Delivery], outbox: Outbox) -> None:
        raise RuntimeError("never durable")

    first = make_loop(bus_namespace, producer, always_fails, "handover")
    await first.start()
    await producer.send_all((TOPIC, "k", Ping.of(PingPayload(n=i))) for i in range(5))
    await wait_for(lambda: first.processing.locked() or first.assigned_once.is_set())
    await asyncio.sleep(1.0)
    await first.stop()

    got: list[int] = []

    async def works(deliveries: Sequence[Delivery], outbox: Outbox) -> None:
        got.extend(d.message.payload.n for d in deliveries)

    second = make_loop(bus_namespace, producer, works, "handover")
    await second.start()
    try:
        await wait_for(lambda: len(got) >= 5)
    finally:
        await second.stop()
    assert sorted(got) == [0, 1, 2, 3, 4]


async def test_poison_record_goes_to_dlq_and_the_loop_goes_on(
    bus_namespace: str, producer: Producer
) -> None:
    got: list[int] = []

    async def handle(deliveries: Sequence[Delivery], outbox: Outbox) -> None:
        got.extend(d.message.payload.n for d in deliveries)

    loop = make_loop(bus_namespace, producer, handle, "poison")
    await loop.start()
    try:
        await producer.send_and_wait(TOPIC, "k", Ping.of(PingPayload(n=1)))
        await producer.send_and_wait(TOPIC, "k", b"{not json")
        await producer.send_and_wait(TOPIC, "k", b'{"type": "Ping", "payload": {"n": "x"}}')
        await producer.send_and_wait(TOPIC, "k", Ping.of(PingPayload(n=2)))
        await wait_for(lambda: len(got) >= 2)
    finally:
        await loop.stop()
    assert got == [1, 2]
    dead = await read_all(namespaced(dead_letter_topic(TOPIC), bus_namespace), 2)
    assert [r.value for r in dead] == [b"{not json", b'{"type": "Ping", "payload": {"n": "x"}}']
    headers = dict(dead[0].headers)
    assert headers["source_topic"] == namespaced(TOPIC, bus_namespace).encode()
    assert b"json" in headers["error"].lower()


async def test_request_reply_returns_results_and_domain_errors(
    bus_namespace: str, producer: Producer
) -> None:
    async def handle_ping(command: Ping, outbox: Outbox) -> PingPayload:
        if command.payload.n < 0:
            raise NotFound("no such ping")
        return PingPayload(n=command.payload.n * 2)

    loop = make_loop(bus_namespace, producer, dispatch_each({Ping: handle_ping}), "rr")
    client = RequestClient(
        producer,
        bootstrap=endpoints.kafka(),
        namespace=bus_namespace,
        instance_id="test-" + secrets.token_hex(3),
        default_timeout_s=20,
    )
    await loop.start()
    await client.start()
    try:
        results = await asyncio.gather(
            *(client.request(TOPIC, f"k{i}", Ping.of(PingPayload(n=i))) for i in range(20))
        )
        assert [r["n"] for r in results] == [i * 2 for i in range(20)]
        with pytest.raises(NotFound):
            await client.request(TOPIC, "k", Ping.of(PingPayload(n=-1)))
    finally:
        await client.stop()
        await loop.stop()
    # Nobody consumes this topic: the request times out with a 504-class error.
    silent = RequestClient(
        producer,
        bootstrap=endpoints.kafka(),
        namespace=bus_namespace,
        instance_id="test-" + secrets.token_hex(3),
        default_timeout_s=0.5,
    )
    await silent.start()
    try:
        with pytest.raises(ReplyTimeout):
            await silent.request(EVENTS, "k", Ping.of(PingPayload(n=1)))
    finally:
        await silent.stop()

"""Replaying a dead-letter topic: records that could not be decoded go back where they came from.

A consumer sends a record it cannot decode to `<topic>.dlq` with its original
key and bytes and headers naming the source (libs/bus/consumer.py). Once the
cause is fixed (a deploy that understands the record), an operator replays
the DLQ: each record is published again, unchanged, to its source topic with
its key, and every consumer of that topic sees it again (the sinks ignore
duplicates, so a group that had handled it is unaffected).

The replay reads the DLQ as consumer group `dlq_replay` and commits only
after the republished records are acknowledged, so running it twice replays
each record once; a record dead-lettered by several groups (one per group)
is republished once per run. `--dry-run` lists what would be replayed and
commits nothing. It stops by itself once the DLQ has been idle for
`--idle` seconds.

    python -m libs.bus.dlq_replay messages.commands.v1 [--dry-run] [--idle 5]
    make dlq-replay TOPIC=messages.commands.v1 [DRY_RUN=1]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from libs.bus.producer import Producer
from libs.contracts.topics import DOMAIN_TOPICS, dead_letter_topic, namespaced
from libs.settings import ConfigurationError, ServiceSettings, load_settings

#: Header the replay adds, so a record that fails again can be told from a first failure.
REPLAYED_HEADER = "replayed_from_dlq"
GROUP = "dlq_replay"


@dataclass
class ReplayReport:
    topic: str
    read: int = 0
    replayed: int = 0
    #: Copies of a record already replayed in this run (dead-lettered by several groups).
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)


def _header(headers: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]], name: str) -> str:
    for key, value in headers or ():
        if key == name:
            return value.decode("utf-8", "replace")
    return ""


async def replay(
    settings: ServiceSettings, topic: str, *, dry_run: bool = False, idle_s: float = 5.0
) -> ReplayReport:
    """Republish every record of `topic`'s DLQ not replayed before; see the module doc."""
    if topic not in DOMAIN_TOPICS:
        raise ConfigurationError(f"{topic!r} is not a domain topic: {', '.join(DOMAIN_TOPICS)}")
    report = ReplayReport(topic)
    physical_dlq = namespaced(dead_letter_topic(topic), settings.namespace)
    consumer = AIOKafkaConsumer(
        physical_dlq,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.consumer_group(GROUP),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = Producer(settings.kafka_bootstrap_servers, settings.namespace)
    await consumer.start()
    await producer.start()
    seen: set[tuple[str, str, str]] = set()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=500)
            records = [record for batch in batches.values() for record in batch]
            if not records:
                break
            pending = []
            offsets: dict[TopicPartition, int] = {}
            for record in records:
                report.read += 1
                tp = TopicPartition(record.topic, record.partition)
                offsets[tp] = max(offsets.get(tp, -1), record.offset + 1)
                headers = list(record.headers or ())
                source = (
                    _header(headers, "source_topic"),
                    _header(headers, "source_partition"),
                    _header(headers, "source_offset"),
                )
                if source in seen:
                    report.duplicates += 1
                    continue
                seen.add(source)
                report.errors.append(_header(headers, "error")[:300])
                report.replayed += 1
                if dry_run:
                    continue
                key = record.key.decode("utf-8", "replace") if record.key is not None else ""
                pending.append(
                    await producer.send(
                        topic,
                        key,
                        record.value or b"",
                        headers=[(REPLAYED_HEADER, f"{record.partition}:{record.offset}".encode())],
                    )
                )
            if dry_run:
                continue
            await asyncio.gather(*pending)
            await consumer.commit(offsets)
    finally:
        await producer.stop()
        await consumer.stop()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libs.bus.dlq_replay", description=__doc__)
    parser.add_argument("topic", help="the source topic, e.g. messages.commands.v1")
    parser.add_argument("--dry-run", action="store_true", help="list, publish nothing")
    parser.add_argument("--idle", type=float, default=5.0, help="stop after this many idle s")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(ServiceSettings)
        report = asyncio.run(replay(settings, args.topic, dry_run=args.dry_run, idle_s=args.idle))
    except ConfigurationError as exc:
        print(f"dlq-replay: {exc}", file=sys.stderr)
        return 2
    verb = "would replay" if args.dry_run else "replayed"
    print(
        f"{report.topic}: read {report.read} dead-lettered records, {verb} {report.replayed}"
        f" ({report.duplicates} copies from other consumer groups skipped)"
    )
    for error in report.errors:
        print(f"  - {error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

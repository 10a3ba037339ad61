"""Kafka topic administration: creating the topics the system needs, idempotently.

Topics are never auto-created (the broker runs with auto.create.topics.enable=false),
so a typo in a topic name fails loudly instead of creating a stray topic.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from libs.settings import ConfigurationError


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int,
    replication: int = 1,
    *,
    config: dict[str, str] | None = None,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create each missing topic; return the names that were created.

    Existing topics are left as they are (their partition count is not changed:
    growing partitions re-keys receivers, which is an operator's decision).
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (KafkaConnectionError, TimeoutError, OSError) as exc:
        raise ConfigurationError(f"Kafka at {bootstrap} is unreachable: {exc}") from None
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in dict.fromkeys(topics) if t not in existing]
        if not wanted:
            return []
        new = [
            NewTopic(
                name=t,
                num_partitions=partitions,
                replication_factor=replication,
                topic_configs=dict(config or {}),
            )
            for t in wanted
        ]
        # A concurrent bootstrap may win the race; the topics exist, which is all we need.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(new, timeout_ms=int(timeout_s * 1000))
        return wanted
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, topics: Iterable[str], timeout_s: float = 30.0) -> None:
    """Delete topics that exist (used for a gateway's reply topic on shutdown)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in topics if t in existing]
        if doomed:
            await admin.delete_topics(doomed, timeout_ms=int(timeout_s * 1000))
    finally:
        await admin.close()

"""Kafka topic administration: creating the topics the system needs, idempotently, and
deleting them (a gateway's reply topic, a finished namespace).

Topics are never auto-created (the broker runs with auto.create.topics.enable=false),
so a typo in a topic name fails loudly instead of creating a stray topic.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from libs.contracts.topics import namespaced
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
    wanted = set(topics)
    await _delete_existing(bootstrap, wanted.__contains__, timeout_s)


async def delete_namespace_topics(bootstrap: str, namespace: str, timeout_s: float = 30.0) -> None:
    """Delete every topic of a namespace (what a finished test session or bench run left)."""
    if not namespace:
        raise ValueError("no namespace: that would be every topic of the cluster")
    prefix = namespaced("", namespace)
    await _delete_existing(bootstrap, lambda topic: topic.startswith(prefix), timeout_s)


async def _delete_existing(
    bootstrap: str, doomed_if: Callable[[str], bool], timeout_s: float
) -> None:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if doomed_if(t)]
        if doomed:
            await admin.delete_topics(doomed, timeout_ms=int(timeout_s * 1000))
    finally:
        await admin.close()

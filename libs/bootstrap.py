"""`python -m libs.bootstrap`: create the Kafka topics of README.md, Architecture.

Run once per deployment (the local launcher, the compose init service and the
Kubernetes Job call it); idempotent. Collections and indexes are created by each
service at its own start, on every shard, since each owns its collections.
"""

from __future__ import annotations

import asyncio
import sys

from libs.bus.admin import ensure_topics
from libs.contracts.topics import USERS_COMMANDS, all_topics, namespaced
from libs.settings import ConfigurationError, ServiceSettings, load_settings

#: Commands that carry passwords are kept an hour, not the broker's default week.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {USERS_COMMANDS: {"retention.ms": str(3_600_000)}}


async def create_topics(settings: ServiceSettings) -> list[str]:
    created: list[str] = []
    plain = [t for t in all_topics() if t not in TOPIC_CONFIGS]
    created += await ensure_topics(
        settings.kafka_bootstrap_servers,
        [namespaced(t, settings.namespace) for t in plain],
        settings.kafka_partitions,
        settings.kafka_replication_factor,
    )
    for topic, config in TOPIC_CONFIGS.items():
        created += await ensure_topics(
            settings.kafka_bootstrap_servers,
            [namespaced(topic, settings.namespace)],
            settings.kafka_partitions,
            settings.kafka_replication_factor,
            config=config,
        )
    return created


def main() -> None:
    try:
        settings = load_settings(ServiceSettings)
        created = asyncio.run(create_topics(settings))
    except ConfigurationError as exc:
        print(f"bootstrap: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"bootstrap: {len(created)} topic(s) created"
        + (f": {', '.join(created)}" if created else "")
    )


if __name__ == "__main__":
    main()

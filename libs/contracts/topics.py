"""Kafka topic names: the one place they are spelled (README.md, Architecture).

Names are constants, never derived from class names. A deployment namespace
(MESSENGER_NAMESPACE, used to isolate test runs and tenants) is applied by
`namespaced`, so the constants stay the names operators see.
"""

from typing import Final

USERS_COMMANDS: Final = "users.commands.v1"
USERS_EVENTS: Final = "users.events.v1"
GROUPS_COMMANDS: Final = "groups.commands.v1"
GROUPS_EVENTS: Final = "groups.events.v1"
MESSAGES_COMMANDS: Final = "messages.commands.v1"
MESSAGES_EVENTS: Final = "messages.events.v1"
RECEIPTS_COMMANDS: Final = "receipts.commands.v1"
RECEIPTS_EVENTS: Final = "receipts.events.v1"
CONVERSATIONS_COMMANDS: Final = "conversations.commands.v1"

#: Topics created at bootstrap, each with a dead-letter twin.
DOMAIN_TOPICS: Final[tuple[str, ...]] = (
    USERS_COMMANDS,
    USERS_EVENTS,
    GROUPS_COMMANDS,
    GROUPS_EVENTS,
    MESSAGES_COMMANDS,
    MESSAGES_EVENTS,
    RECEIPTS_COMMANDS,
    RECEIPTS_EVENTS,
    CONVERSATIONS_COMMANDS,
)

DLQ_SUFFIX: Final = ".dlq"
#: Prefix of the per-instance reply topic each gateway creates for request-reply.
GATEWAY_REPLIES_PREFIX: Final = "gateway.replies."


def dead_letter_topic(topic: str) -> str:
    """The dead-letter twin of a topic: where undecodable records of it go."""
    return topic + DLQ_SUFFIX


def all_topics() -> tuple[str, ...]:
    """Every topic bootstrap creates: the domain topics and their DLQs."""
    return DOMAIN_TOPICS + tuple(dead_letter_topic(t) for t in DOMAIN_TOPICS)


def namespaced(topic: str, namespace: str) -> str:
    """The physical topic name in a namespace ('' means none)."""
    return f"{namespace}.{topic}" if namespace else topic

"""Whether a user muted a conversation: the one question the notifier asks about mutes.

Mute settings belong to the conversation list (delivery_service's inbox read
model, PATCH /v1/conversations/...): read through its owner's helper
(libs/inbox_projection.py), for the (user, conversation) pairs of a batch in one
round trip.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys
from libs.inbox_projection import muted_pairs


async def muted(
    redis: Redis, keys: RedisKeys, pairs: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """The (user_id, conversation_id) pairs, among `pairs`, that the user muted."""
    return await muted_pairs(redis, keys, list(pairs))

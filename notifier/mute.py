"""Whether a user muted a conversation: the one question the notifier asks about mutes.

Mute settings belong to the conversation list (issue 16), which is not on this
branch: until it is merged, nothing is muted. When it is, `muted` must read that
module's stored mute (through its owner, never a key spelled here) for the
(user, conversation) pairs of a batch, in one round trip; the tests in
tests/notifications/test_notifier.py then gain their muted case.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys


async def muted(
    redis: Redis, keys: RedisKeys, pairs: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """The (user_id, conversation_id) pairs, among `pairs`, that the user muted."""
    return set()

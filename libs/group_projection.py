"""Read helpers over group_service's Redis projections (members, groups, blocks).

group_service writes these keys before it answers a command (read-your-writes)
and rebuilds them from its MongoDB collections whenever the
`projection_ready("groups")` sentinel is missing. Readers (message_service,
delivery_service, the gateway) use these helpers, which raise
`libs.errors.Unavailable` (503) when the sentinel is missing rather than guess
from a projection that may be incomplete.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys
from libs.errors import Unavailable

PROJECTION = "groups"


def projection_unavailable() -> Unavailable:
    """The 503 a reader answers while the projection is incomplete."""
    return Unavailable(
        "group and block data is being rebuilt; retry shortly", code="projection_rebuilding"
    )


async def group_members(redis: Redis, keys: RedisKeys, group_id: str) -> dict[str, str] | None:
    """user_id -> role of a group's members, or None when there is no such group."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.projection_ready(PROJECTION))
        pipe.exists(keys.group(group_id))
        pipe.hgetall(keys.group_members(group_id))
        ready, exists, members = await pipe.execute()
    if not ready:
        raise projection_unavailable()
    if not exists:
        return None
    return dict(members)


async def blocks(redis: Redis, keys: RedisKeys, blocker_id: str, other_id: str) -> bool:
    """Whether `blocker_id` blocks `other_id`."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.projection_ready(PROJECTION))
        pipe.sismember(keys.blocks(blocker_id), other_id)
        ready, blocked = await pipe.execute()
    if not ready:
        raise projection_unavailable()
    return bool(blocked)


async def blockers_among(
    redis: Redis, keys: RedisKeys, user_ids: Iterable[str], sender_id: str
) -> set[str]:
    """Those of `user_ids` who block `sender_id` (one pipelined round trip)."""
    candidates = list(user_ids)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.projection_ready(PROJECTION))
        for user_id in candidates:
            pipe.sismember(keys.blocks(user_id), sender_id)
        ready, *flags = await pipe.execute()
    if not ready:
        raise projection_unavailable()
    return {user_id for user_id, flag in zip(candidates, flags, strict=True) if flag}


async def user_groups(redis: Redis, keys: RedisKeys, user_id: str) -> set[str]:
    """Ids of the groups `user_id` is a member of."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.projection_ready(PROJECTION))
        pipe.smembers(keys.user_groups(user_id))
        ready, group_ids = await pipe.execute()
    if not ready:
        raise projection_unavailable()
    return set(group_ids)


async def share_a_group(redis: Redis, keys: RedisKeys, user_id: str, other_id: str) -> bool:
    """Whether the two users are members of at least one common group."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.projection_ready(PROJECTION))
        pipe.sintercard(2, [keys.user_groups(user_id), keys.user_groups(other_id)], limit=1)
        ready, common = await pipe.execute()
    if not ready:
        raise projection_unavailable()
    return int(common) > 0

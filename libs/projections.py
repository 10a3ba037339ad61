"""Reading the users projection that user_service keeps in Redis (README.md, Architecture).

user_service writes `user:<id>` {id, username, display_name, created_at,
deleted "0"/"1"} and `username:<lower>` -> id before it replies, and rebuilds
both from MongoDB whenever the `projection_ready("users")` sentinel is missing.
Every reader goes through these helpers, so a missing sentinel (Redis flushed,
rebuild in progress) is answered with Unavailable (503) instead of a wrong
"no such user".
"""

from __future__ import annotations

from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys
from libs.errors import Unavailable

USERS_PROJECTION = "users"


def _unavailable() -> Unavailable:
    return Unavailable(
        "the users projection is being rebuilt; retry shortly", code="projection_rebuilding"
    )


async def user_profile(redis: Redis, keys: RedisKeys, user_id: str) -> dict[str, str] | None:
    """The profile of a live user, or None when unknown or deleted."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.projection_ready(USERS_PROJECTION))
        pipe.hgetall(keys.user_profile(user_id))
        ready, profile = await pipe.execute()
    if not ready:
        raise _unavailable()
    if not profile or profile.get("deleted") != "0":
        return None
    return profile


async def user_exists(redis: Redis, keys: RedisKeys, user_id: str) -> bool:
    """Whether `user_id` is a registered, not deleted user."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.projection_ready(USERS_PROJECTION))
        pipe.hget(keys.user_profile(user_id), "deleted")
        ready, deleted = await pipe.execute()
    if not ready:
        raise _unavailable()
    return deleted == "0"


async def user_id_for_username(redis: Redis, keys: RedisKeys, username: str) -> str | None:
    """The id of the live user called `username` (case-insensitive), or None."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.projection_ready(USERS_PROJECTION))
        pipe.get(keys.username(username.lower()))
        ready, user_id = await pipe.execute()
    if not ready:
        raise _unavailable()
    return user_id

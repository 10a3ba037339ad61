"""What the notifier reads and the one thing it writes.

Reads: the groups projection and blocks (group_service's, in Redis) to resolve
recipients the way delivery_service does (members but the sender and those who
block the sender); the session registry (libs.push) to tell who is offline; push
targets (libs.push_targets). Writes: removes the targets that answered 404/410.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys
from libs.contracts.messages import MessageAcceptedPayload, conversation_id
from libs.errors import Unavailable
from libs.group_projection import PROJECTION as GROUPS_PROJECTION
from libs.push import connections_of
from libs.push_targets import PushTargets
from notifier import mute


class NotifierRepository:
    def __init__(self, redis: Redis, keys: RedisKeys, targets: PushTargets) -> None:
        self.redis = redis
        self.keys = keys
        self.push_targets = targets

    async def recipients(self, messages: Sequence[MessageAcceptedPayload]) -> dict[str, list[str]]:
        """message_id -> the users it notifies (never the sender), in one or two round trips.

        A group message notifies the members who had joined by the time it was
        accepted: the notifier may run behind, and someone removed and added back
        meanwhile must not be told of what was sent while they were out."""
        groups = sorted({m.receiver_id for m in messages if m.receiver_kind == "group"})
        members: dict[str, list[str]] = {}
        joined: dict[str, dict[str, str]] = {}
        if groups:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.exists(self.keys.projection_ready(GROUPS_PROJECTION))
                for group_id in groups:
                    pipe.hkeys(self.keys.group_members(group_id))
                    pipe.hgetall(self.keys.group_joined(group_id))
                ready, *rows = await pipe.execute()
            if not ready:
                raise Unavailable("the groups projection is being rebuilt")
            members = dict(zip(groups, rows[0::2], strict=True))
            joined = dict(zip(groups, rows[1::2], strict=True))
        candidates: dict[str, list[str]] = {}
        for m in messages:
            if m.receiver_kind != "group":
                candidates[m.message_id] = [m.receiver_id]
                continue
            since = joined.get(m.receiver_id, {})
            candidates[m.message_id] = [
                u
                for u in members.get(m.receiver_id, [])
                if u != m.sender_id and _joined_by(since.get(u), m.created_at)
            ]
        pairs = list(
            dict.fromkeys((u, m.sender_id) for m in messages for u in candidates[m.message_id])
        )
        blocking: set[tuple[str, str]] = set()
        if pairs:
            async with self.redis.pipeline(transaction=False) as pipe:
                for user_id, sender_id in pairs:
                    pipe.sismember(self.keys.blocks(user_id), sender_id)
                flags = await pipe.execute()
            blocking = {pair for pair, flag in zip(pairs, flags, strict=True) if flag}
        return {
            m.message_id: [u for u in candidates[m.message_id] if (u, m.sender_id) not in blocking]
            for m in messages
        }

    async def online(self, user_ids: Iterable[str]) -> set[str]:
        """The users with at least one live socket (the session registry)."""
        routes = await connections_of(self.redis, self.keys, user_ids)
        return {user for user, live in routes.items() if live}

    async def muted(self, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        return await mute.muted(self.redis, self.keys, pairs)

    async def targets(self, user_id: str) -> list[dict[str, Any]]:
        return await self.push_targets.list(user_id)

    async def remove_target(self, user_id: str, target_id: str) -> None:
        await self.push_targets.remove(user_id, target_id)


def _joined_by(joined_at: str | None, moment: datetime) -> bool:
    """Whether a member who joined at `joined_at` (ISO 8601; unknown: yes) was in by
    `moment`."""
    if not joined_at:
        return True
    try:
        at = datetime.fromisoformat(joined_at)
    except ValueError:
        return True
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at <= moment


def conversation_of(message: MessageAcceptedPayload) -> str:
    return conversation_id(message.receiver_kind, message.receiver_id, message.sender_id)

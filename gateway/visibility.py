"""What a caller may see of others' group messages: nothing from users it blocks.

A user who blocks another gets none of its group messages: delivery_service
leaves the blocker out of the push, and the gateway's reads (history of a
group, /v1/sync, the WebSocket `resume`) drop them for the blocker. Sync
cursors still advance past a dropped message (its seq is consumed), so
nothing stalls. Direct messages need no filter: they are refused at send once
either side blocks (docs/realtime.md, "Blocks").
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys
from libs.contracts.messages import MessageView


async def blocked_by(redis: Redis, keys: RedisKeys, viewer_id: str) -> set[str]:
    """The users `viewer_id` blocks (group_service's projection)."""
    return set(await redis.smembers(keys.blocks(viewer_id)))


def visible_to(messages: Sequence[MessageView], blocked: set[str]) -> list[MessageView]:
    """`messages` without the group messages of senders the viewer blocks."""
    if not blocked:
        return list(messages)
    return [m for m in messages if not (m.receiver.kind == "group" and m.sender_id in blocked)]

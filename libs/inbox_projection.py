"""Read helpers over the inbox read model that delivery_service keeps in Redis.

delivery_service/inbox.py writes it (and describes its keys); the gateway reads
it here for GET /v1/conversations and the PATCH answers: the page's order, then
one pipelined round trip for its entries with their unread counts (ZCARD: O(1)
each) and titles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys

PROJECTION = "inbox"
SETTINGS_COLLECTION = "conversation_settings"


def settings_id(user_id: str, conversation: str) -> str:
    return f"{user_id}|{conversation}"


@dataclass(frozen=True, slots=True)
class InboxEntry:
    conversation: str  # "user:<peer>" | "group:<id>"
    kind: str
    target_id: str
    last_activity_ms: int
    last_message: str | None  # stored MessageView JSON
    unread_count: int
    muted: bool
    archived: bool
    #: The other user's display name (else username), or the group's name.
    title: str = ""


async def inbox_page(
    redis: Redis,
    keys: RedisKeys,
    user_id: str,
    *,
    archived: bool,
    before: tuple[int, str] | None,
    limit: int,
) -> tuple[list[InboxEntry], bool]:
    """The `limit` most recent conversations strictly after the cursor (last activity
    ms, conversation) in (score desc, member desc) order; and whether more follow."""
    key = keys.inbox(user_id, archived)
    top = "+inf" if before is None else before[0]
    # Ties on the cursor's score come first in the answer: fetch enough to skip them.
    rows = await redis.zrevrangebyscore(key, top, "-inf", start=0, num=limit + 64, withscores=True)
    picked: list[tuple[str, int]] = []
    for member, score in rows:
        ms = int(score)
        if before is not None and ms == before[0] and member >= before[1]:
            continue
        picked.append((member, ms))
        if len(picked) > limit:
            break
    more = len(picked) > limit
    picked = picked[:limit]
    return await entries_of(redis, keys, user_id, [m for m, _ in picked]), more


async def entries_of(
    redis: Redis, keys: RedisKeys, user_id: str, conversations: Sequence[str]
) -> list[InboxEntry]:
    """The entries of these conversations of one user (missing ones left out), with
    their titles (users and groups projections), in one round trip."""
    if not conversations:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for conversation in conversations:
            pipe.hgetall(keys.inbox_entry(user_id, conversation))
            pipe.zcard(keys.unread(user_id, conversation))
            kind, _, target = conversation.partition(":")
            if kind == "group":
                pipe.hmget(keys.group(target), "name", "name")
            else:
                pipe.hmget(keys.user_profile(target), "display_name", "username")
        rows = await pipe.execute()
    entries: list[InboxEntry] = []
    for index, conversation in enumerate(conversations):
        entry, unread, (title, fallback) = rows[3 * index : 3 * index + 3]
        if not entry or "kind" not in entry:
            continue
        entries.append(
            InboxEntry(
                conversation=conversation,
                kind=entry["kind"],
                target_id=entry["id"],
                last_activity_ms=int(entry.get("last_activity_ms", 0)),
                last_message=entry.get("last_message"),
                unread_count=int(unread),
                muted=entry.get("muted") == "1",
                archived=entry.get("archived") == "1",
                title=title or fallback or "",
            )
        )
    return entries

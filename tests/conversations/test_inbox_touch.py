"""delivery_service's inbox touch against the local Redis and store: one script call
carries a group message to many members, and each member's entry ends as a call of
its own would leave it (un-archived unless muted, unread only past the read mark,
a stand-in activity time replaced, an older message not moving the conversation).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

import delivery_service.inbox as inbox_module
from delivery_service.inbox import SETTINGS, InboxRepository, Touch
from libs.contracts.keys import RedisKeys
from libs.storage.mongo import MongoShards
from tests.support.stores import count_pipelines, scratch_shards


@pytest.fixture
async def shards(infra: None) -> AsyncIterator[MongoShards]:
    async with scratch_shards("touchtest", [SETTINGS]) as shards:
        yield shards


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of commands in each pipeline sent."""
    return count_pipelines(monkeypatch)


async def test_a_group_message_touches_every_member_in_few_calls(
    redis: Redis, shards: MongoShards, calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_module, "TOUCH_CALL_MAX", 4)
    keys = RedisKeys("touch" + secrets.token_hex(4))
    inbox = InboxRepository(redis, keys, shards)
    group = "g" + secrets.token_hex(4)
    conversation = f"group:{group}"
    members = [f"u{i}" for i in range(10)]
    # Members 0-9 joined at 1,000 ms (no message yet).
    await inbox.touch([Touch(m, "group", group, 1_000, is_message=False) for m in members])
    # u1 archived, u2 archived and muted, u3 read up to seq 7, u4 made its entry by a
    # settings change after leaving (a stand-in time in the future).
    await redis.hset(keys.inbox_entry("u1", conversation), "archived", "1")
    await redis.hset(keys.inbox_entry("u2", conversation), mapping={"archived": "1", "muted": "1"})
    await redis.hset(keys.inbox_entry("u3", conversation), "read_seq", "7")
    await redis.hset(
        keys.inbox_entry("u4", conversation), mapping={"last_activity_ms": 9_999, "standin": "1"}
    )
    for user, archived in (("u1", True), ("u2", True)):
        await redis.zrem(keys.inbox(user, archived=not archived), conversation)
        await redis.zadd(keys.inbox(user, archived=archived), {conversation: 1_000})
    calls.clear()

    body = '{"id": "m5", "content": "hello"}'
    # Seq 5 from u0: every other member counts it; u0 (the sender) does not.
    touches = [Touch(m, "group", group, 2_000, body, "m5", 5) for m in members[1:]]
    touches.append(Touch("u0", "group", group, 2_000, body, "m5"))
    await inbox.touch(touches)
    assert calls == [3]  # one pipeline: 10 members in calls of at most 4

    async def state(user: str) -> tuple[dict[str, str], float | None, float | None, int]:
        entry = await redis.hgetall(keys.inbox_entry(user, conversation))
        return (
            entry,
            await redis.zscore(keys.inbox(user, archived=False), conversation),
            await redis.zscore(keys.inbox(user, archived=True), conversation),
            await redis.zcard(keys.unread(user, conversation)),
        )

    entry, listed, archived, unread = await state("u0")
    assert (entry["last_message"], entry["last_message_id"], entry["kind"], entry["id"]) == (
        body,
        "m5",
        "group",
        group,
    )
    assert (listed, archived, unread) == (2_000, None, 0)
    entry, listed, archived, unread = await state("u1")  # un-archived by the message
    assert (entry["archived"], listed, archived, unread) == ("0", 2_000, None, 1)
    entry, listed, archived, unread = await state("u2")  # muted: stays archived
    assert (entry["archived"], listed, archived, unread) == ("1", None, 2_000, 1)
    entry, listed, archived, unread = await state("u3")  # read past seq 5 already
    assert (listed, unread) == (2_000, 0)
    entry, listed, archived, unread = await state("u4")  # the stand-in time is replaced
    assert (entry["last_activity_ms"], "standin" in entry, listed, unread) == (
        "2000",
        False,
        2_000,
        1,
    )
    for user in members[5:]:
        entry, listed, archived, unread = await state(user)
        assert (entry["last_message_id"], listed, archived, unread) == ("m5", 2_000, None, 1)
    # Only u1 was un-archived, and that is durable.
    stored = [doc async for doc in shards.collection_for("u1", SETTINGS.name).find({})]
    assert [(d["user_id"], d["archived"]) for d in stored] == [("u1", False)]

    # An older message (seq 4, earlier time) arriving late counts unread but does
    # not move the conversation or replace the last message.
    await inbox.touch([Touch(m, "group", group, 1_500, '{"id": "m4"}', "m4", 4) for m in members])
    entry, listed, archived, unread = await state("u7")
    assert (entry["last_message_id"], entry["last_activity_ms"], listed, unread) == (
        "m5",
        "2000",
        2_000,
        2,
    )


async def test_consecutive_touches_of_other_conversations_are_separate_calls() -> None:
    touches = [
        Touch("a", "user", "b", 1, "x", "m1", 1),
        Touch("b", "user", "a", 1, "x", "m1"),
        Touch("c", "group", "g", 2, "y", "m2", 3),
        Touch("d", "group", "g", 2, "y", "m2", 3),
        Touch("e", "group", "g", 3, "z", "m3", 4),
    ]
    grouped = inbox_module._touch_calls(touches)
    assert [[t.user_id for t in call] for call in grouped] == [["a"], ["b"], ["c", "d"], ["e"]]

"""libs.storage.redis_scripts against the local Redis: a pipeline's scripts go by
EVALSHA alone (no SCRIPT EXISTS round trip), and a script Redis does not know is
loaded and the pipeline run again.

The send path's cache write (RecentCache.add) is the user: one round trip for the
history cache, the sync cache and the message locators.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from libs.contracts.keys import RedisKeys
from libs.contracts.messages import MessageAcceptedPayload
from libs.ids import new_id
from libs.readmodels.messages import RecentCache, conversation_id, encode_location
from libs.storage.redis_scripts import LuaScript, run_pipeline
from tests.support.stores import count_pipelines


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many commands each pipeline sent, and any SCRIPT EXISTS asked."""
    sent = count_pipelines(monkeypatch)

    async def asked(self: Pipeline) -> None:
        raise AssertionError("the pipeline asked SCRIPT EXISTS")

    monkeypatch.setattr(Pipeline, "load_scripts", asked)
    return sent


async def test_an_unknown_script_is_loaded_and_the_pipeline_run_again(
    redis: Redis, round_trips: list[int]
) -> None:
    key = "scripttest:" + secrets.token_hex(6)
    # A source no Redis has seen: its first EVALSHA gets NOSCRIPT.
    script = LuaScript(
        f"-- {secrets.token_hex(8)}\nredis.call('SET', KEYS[1], ARGV[1]) return ARGV[1]"
    )
    assert await redis.script_exists(script.sha) == [False]
    try:

        def build(pipe: Pipeline) -> None:
            script.queue(pipe, [key], ["one"])
            pipe.get(key)

        assert await run_pipeline(redis, build, [script]) == ["one", "one"]
        assert round_trips == [2, 2]  # refused, loaded, run again
        assert await redis.script_exists(script.sha) == [True]
        round_trips.clear()
        assert await run_pipeline(redis, build, [script]) == ["one", "one"]
        assert round_trips == [2]  # known now: one round trip
    finally:
        await redis.delete(key)


async def test_the_send_paths_cache_write_is_one_round_trip(
    redis: Redis, round_trips: list[int]
) -> None:
    keys = RedisKeys("scripttest" + secrets.token_hex(4))
    cache = RecentCache(redis, keys, cap=200, inbox_cap=200, ttl_s=60)
    ada, bob = new_id(), new_id()
    messages = [
        MessageAcceptedPayload(
            message_id=new_id(),
            receiver_kind="user",
            receiver_id=bob,
            seq=n,
            sender_id=ada,
            content=f"hello {n}",
            created_at=datetime(2026, 12, 2, 10, 0, n, tzinfo=UTC),
            dseq=n,
        )
        for n in (1, 2)
    ]
    conversation = conversation_id("user", bob, ada)
    written = [
        keys.recent_messages(conversation),
        keys.recent_bodies(conversation),
        keys.recent_inbox(bob),
        *(keys.message_locator(m.message_id) for m in messages),
    ]
    try:
        await cache.add(messages, {m.message_id for m in messages})
        round_trips.clear()  # the first may have loaded the script
        await cache.add(messages, set())  # a replay: the same entries again
        assert len(round_trips) == 1
        for m in messages:
            assert await redis.get(keys.message_locator(m.message_id)) == encode_location(m)
        assert await redis.zcard(keys.recent_inbox(bob)) == 2
        assert await redis.zcard(keys.recent_messages(conversation)) == 2
        assert (await redis.hget(keys.recent_bodies(conversation), f"from:{bob}")) is not None
    finally:
        await redis.delete(*written)

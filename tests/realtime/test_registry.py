"""The session registry under a storm of connects and disconnects (real Redis): every
call made while a pipeline is in flight rides the next one, so a pool of two
connections serves a thousand sockets, and who went on- or offline stays right."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from aiohttp import web
from redis.asyncio import BlockingConnectionPool, Redis

from gateway.sockets import Connection, RealtimeSettings, SocketHub
from libs.contracts.keys import RedisKeys
from libs.push import live_routes
from libs.settings import ServiceSettings


def socket_of(user_id: str) -> Connection:
    return Connection(user_id, "hash", web.WebSocketResponse(), asyncio.Queue())


async def test_a_storm_of_registrations_shares_one_connection_and_stays_right(
    infra: None,
) -> None:
    keys = RedisKeys("unit_" + secrets.token_hex(4))
    # Two connections, and a second's wait: one Redis call per socket could not pass.
    pool = BlockingConnectionPool.from_url(
        ServiceSettings().redis_url, decode_responses=True, max_connections=2, timeout=1
    )
    redis = Redis.from_pool(pool)
    pipelines = 0
    make_pipeline = redis.pipeline

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal pipelines
        pipelines += 1
        return make_pipeline(*args, **kwargs)

    redis.pipeline = counted  # type: ignore[method-assign]
    hub = SocketHub(redis, keys, "gw-unit", RealtimeSettings())
    try:
        users = [f"u{n}" for n in range(500)]
        first = [socket_of(u) for u in users]
        second = [socket_of(u) for u in users]
        went_online = await asyncio.gather(*(hub.register(c) for c in first + second))
        # The first socket of each user brought it online, the second did not.
        assert went_online == [True] * 500 + [False] * 500
        assert pipelines <= 3  # batches of REGISTRY_BATCH_MAX, not one per socket
        routes = await redis.hgetall(keys.user_connections("u7"))
        assert set(live_routes(routes)) == {first[7].id, second[7].id}

        went_offline = await asyncio.gather(*(hub.unregister(c) for c in first + second))
        assert went_offline == [False] * 500 + [True] * 500
        assert pipelines <= 6
        assert not await redis.exists(keys.user_connections("u7"))
        assert await redis.get(keys.last_seen("u7"))
    finally:
        leftovers = await redis.keys(keys.key("*"))
        if leftovers:
            await redis.delete(*leftovers)
        await redis.aclose()

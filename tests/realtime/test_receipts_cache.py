"""Watermarks are durable in MongoDB; Redis is a cache of them. With this
namespace's watermark keys and sentinel gone (as after a Redis flush), status
is still right (read from MongoDB) and delivery_service rebuilds the cache."""

from __future__ import annotations

import aiohttp
from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys
from tests.realtime.test_delivery import eventually, history, send
from tests.support import endpoints
from tests.support.client import Api
from tests.support.system import RunningSystem


async def test_status_survives_the_loss_of_the_watermark_cache(
    system: RunningSystem, http: aiohttp.ClientSession, namespace: str
) -> None:
    api = Api(http, system.gateway_url)
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    first = await send(api, ada, to_user_id=bob.id, content="one")
    second = await send(api, ada, to_user_id=bob.id, content="two")
    read = await api.call(
        "POST",
        f"/v1/conversations/users/{ada.id}/read",
        token=bob.token,
        json={"seq": first["seq"]},
    )
    assert read.status == 200

    keys = RedisKeys(namespace)
    redis = Redis.from_url(endpoints.redis_url(), decode_responses=True)
    try:
        doomed = [keys.projection_ready("receipts")]
        for pattern in (keys.key("wm_delivered", "*"), keys.key("wm_read", "*")):
            doomed += [k async for k in redis.scan_iter(match=pattern, count=1000)]
        await redis.delete(*doomed)

        def statuses(page: list[dict]) -> dict[str, str]:
            return {m["id"]: m["status"] for m in page}

        page = statuses(await history(api, ada, with_user=bob.id))  # from MongoDB
        assert page[first["id"]] == "read"
        assert page[second["id"]] == "sent"

        # The next batch delivery_service handles rebuilds the cache first.
        await send(api, ada, to_user_id=bob.id, content="three")

        async def rebuilt() -> bool:
            return bool(await redis.exists(keys.projection_ready("receipts")))

        await eventually(rebuilt)
        assert int(await redis.hget(keys.read_watermarks(bob.id), ada.id)) == first["seq"]
        page = statuses(await history(api, ada, with_user=bob.id))
        assert page[first["id"]] == "read"
        assert page[second["id"]] == "sent"
    finally:
        await redis.aclose()

"""Mute and archive are durable: when Redis loses the inbox (its entries and the
`proj_ready:inbox` sentinel), delivery_service puts the settings back from MongoDB
before it handles its next batch."""

from __future__ import annotations

from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys
from libs.inbox_projection import PROJECTION
from tests.conversations.conftest import conversations, entry, eventually, send
from tests.support import endpoints
from tests.support.client import Api


async def test_settings_survive_the_loss_of_the_read_model(api: Api, namespace: str) -> None:
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    await send(api, ada, to_user_id=bob.id, content="hi")
    await eventually(
        lambda: conversations(api, bob), lambda items: entry(items, "user", ada.id) is not None
    )
    muted = await api.call(
        "PATCH", f"/v1/conversations/users/{ada.id}", token=bob.token, json={"muted": True}
    )
    assert muted.status == 200, muted

    keys = RedisKeys(namespace)
    redis = Redis.from_url(endpoints.redis_url(), decode_responses=True)
    try:
        conversation = f"user:{ada.id}"
        await redis.delete(
            keys.inbox_entry(bob.id, conversation),
            keys.inbox(bob.id, archived=False),
            keys.projection_ready(PROJECTION),
        )
        assert entry(await conversations(api, bob), "user", ada.id) is None
        # Any record makes delivery_service notice the missing sentinel.
        await send(api, ada, to_user_id=bob.id, content="again")
        items = await eventually(
            lambda: conversations(api, bob),
            lambda items: (entry(items, "user", ada.id) or {}).get("last_message") is not None,
        )
        assert entry(items, "user", ada.id)["muted"] is True  # type: ignore[index]
        assert await redis.exists(keys.projection_ready(PROJECTION))
    finally:
        await redis.aclose()

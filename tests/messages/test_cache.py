"""The recent-messages caches: bounded, and history/sync stay right when they are lost."""

from __future__ import annotations

from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys
from tests.messages.conftest import all_history, eventually, history, send_ok
from tests.support.client import Api, User


async def _sync_everything(api: Api, user: User) -> list[dict]:
    messages: list[dict] = []
    cursor = None
    while True:
        params = {"limit": 50, **({"cursor": cursor} if cursor else {})}
        reply = await api.call("GET", "/v1/sync", token=user.token, params=params)
        assert reply.status == 200, reply
        messages += reply.body["messages"]
        cursor = reply.body["cursor"]
        if not reply.body["has_more"]:
            return messages


async def test_caches_are_bounded_and_lost_caches_fall_back_to_mongodb(
    api: Api, redis: Redis, namespace: str
) -> None:
    keys = RedisKeys(namespace)
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    sent = []
    for i in range(260):
        sender, receiver = (ada, bob) if i % 4 else (bob, ada)
        sent.append(await send_ok(api, sender, to_user=receiver.id, content=f"c{i}"))
    low, high = sorted((ada.id, bob.id))
    conversation = f"d:{low}:{high}"
    assert await redis.zcard(keys.recent_messages(conversation)) == 200
    markers = await redis.hmget(
        keys.recent_bodies(conversation), [f"from:{ada.id}", f"from:{bob.id}"]
    )
    assert all(markers)
    assert await redis.zcard(keys.recent_inbox(bob.id)) == 195  # 3 of every 4 went to bob

    expected = [m["id"] for m in reversed(sent)]
    assert [
        m["id"] for m in await all_history(api, ada, page_size=45, with_user=bob.id)
    ] == expected
    bob_inbox = [m["id"] for m in sent if m["receiver"]["id"] == bob.id]
    assert [m["id"] for m in await _sync_everything(api, bob)] == bob_inbox

    # The caches are lost (eviction, flush): answers come from MongoDB, still complete.
    await redis.delete(
        keys.recent_messages(conversation),
        keys.recent_bodies(conversation),
        keys.recent_inbox(ada.id),
        keys.recent_inbox(bob.id),
    )

    async def walk() -> list[str]:
        return [m["id"] for m in await all_history(api, bob, page_size=100, with_user=ada.id)]

    assert await eventually(walk, lambda ids: ids == expected) == expected
    assert [m["id"] for m in await _sync_everything(api, bob)] == bob_inbox

    # New messages are visible at once and the older ones stay reachable.
    latest = await send_ok(api, ada, to_user=bob.id, content="after the loss")
    newest = await history(api, bob, with_user=ada.id, limit=1)
    assert newest.body["messages"][0]["id"] == latest["id"]
    assert await walk() == [latest["id"], *expected]

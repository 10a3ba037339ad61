"""The group/block projections rebuilt from MongoDB give the same answers.

Deletes this test session's group keys and the sentinel from Redis (never
FLUSHALL: other sessions share this Redis) and checks that group_service
rebuilds them from its MongoDB collections to exactly the same API answers.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys
from tests.groups.helpers import eventually
from tests.support.client import Api, User


async def answers(api: Api, users: list[User], group_ids: list[str]) -> dict[str, Any]:
    """Everything the API says about these users' groups and blocks."""
    seen: dict[str, Any] = {}
    for user in users:
        mine = await api.call("GET", "/v1/groups", token=user.token)
        blocks = await api.call("GET", "/v1/blocks", token=user.token)
        seen[f"groups:{user.id}"] = (mine.status, mine.body)
        seen[f"blocks:{user.id}"] = (blocks.status, blocks.body)
        for gid in group_ids:
            view = await api.call("GET", f"/v1/groups/{gid}", token=user.token)
            seen[f"group:{gid}:{user.id}"] = (view.status, view.body)
    return seen


async def drop_group_projection(redis: Redis, namespace: str) -> int:
    keys = RedisKeys(namespace)
    patterns = [
        keys.group("*"),
        keys.group_members("*"),
        keys.group_joined("*"),
        keys.user_groups("*"),
        keys.blocks("*"),
    ]
    doomed = [keys.projection_ready("groups")]
    for pattern in patterns:
        doomed += [key async for key in redis.scan_iter(match=pattern, count=1000)]
    return int(await redis.delete(*doomed))


async def test_projection_rebuilt_from_scratch_gives_the_same_answers(
    api: Api, redis: Redis, namespace: str
) -> None:
    owner, admin, member, loner = [await api.new_user("p") for _ in range(4)]

    async def call(method: str, path: str, user: User, json: Any = None) -> Any:
        reply = await api.call(method, path, json=json, token=user.token)
        assert reply.status < 300, (method, path, reply)
        return reply.body

    g1 = (await call("POST", "/v1/groups", owner, {"name": "one", "member_ids": [member.id]}))["id"]
    await call("PUT", f"/v1/groups/{g1}/members/{admin.id}", owner)
    await call("PUT", f"/v1/groups/{g1}/members/{admin.id}/role", owner, {"role": "admin"})
    await call("PATCH", f"/v1/groups/{g1}", admin, {"name": "one renamed"})
    g2 = (await call("POST", "/v1/groups", owner, {"name": "two", "member_ids": [loner.id]}))["id"]
    await call("DELETE", f"/v1/groups/{g2}/members/{owner.id}", owner)  # hand-over to loner
    g3 = (await call("POST", "/v1/groups", member, {"name": "three"}))["id"]
    await call("DELETE", f"/v1/groups/{g3}", member)  # deleted: must stay deleted
    await call("PUT", f"/v1/blocks/{member.id}", owner)
    await call("PUT", f"/v1/blocks/{owner.id}", loner)
    await call("PUT", f"/v1/blocks/{admin.id}", loner)
    await call("DELETE", f"/v1/blocks/{admin.id}", loner)

    users = [owner, admin, member, loner]
    groups = [g1, g2, g3]
    before = await answers(api, users, groups)
    assert before[f"group:{g2}:{loner.id}"][1]["owner_id"] == loner.id
    assert before[f"group:{g3}:{member.id}"][0] == 404

    assert await drop_group_projection(redis, namespace) > 0

    async def probe() -> int:
        return (await api.call("GET", "/v1/blocks", token=owner.token)).status

    assert await eventually(probe, lambda status: status == 200) == 200
    after = await answers(api, users, groups)
    assert after == before

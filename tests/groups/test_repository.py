"""group_service's repository against the real Redis and FerretDB shards.

A namespace of its own per test: MongoDB is the durable source, the Redis
projection is rebuilt from it, and a write racing a rebuild is refused rather
than lost.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from group_service.repository import GroupRepository, GroupState, Member, ProjectionLost
from libs.contracts.keys import RedisKeys
from libs.ids import new_id
from libs.storage.mongo import open_shards
from tests.support import endpoints

NOW = datetime(2026, 11, 22, 4, 0, 0, 123000, tzinfo=UTC)


@pytest.fixture
async def repo(infra: None) -> AsyncIterator[GroupRepository]:
    namespace = "r" + secrets.token_hex(5)
    shards = open_shards(endpoints.mongo_shards(), f"messenger_{namespace}")
    redis = Redis.from_url(endpoints.redis_url(), decode_responses=True)
    repository = GroupRepository(shards, redis, RedisKeys(namespace))
    await repository.bootstrap()
    assert await repository.rebuild_projection() == {"groups": 0, "memberships": 0, "blocks": 0}
    yield repository
    keys = [key async for key in redis.scan_iter(match=f"{namespace}:*")]
    if keys:
        await redis.delete(*keys)
    for client in shards.clients:
        await client.drop_database(f"messenger_{namespace}")
    await redis.aclose()
    await shards.close()


def a_group(owner: str, *members: str) -> GroupState:
    group = GroupState(new_id(), "team", owner, NOW, {owner: Member("owner", NOW)})
    group.members.update({m: Member("member", NOW) for m in members})
    return group


async def test_projection_rebuilt_from_mongodb_matches(repo: GroupRepository) -> None:
    owner, alice, bob = new_id(), new_id(), new_id()
    group = a_group(owner, alice, bob)
    await repo.create_group(group)
    await repo.set_role(group.id, alice, "admin")
    await repo.remove_member(group.id, bob)
    await repo.block(owner, bob, NOW)
    gone = a_group(bob)
    await repo.create_group(gone)
    await repo.delete_group(gone)
    before = await repo.load_group(group.id)
    assert before is not None
    assert {u: m.role for u, m in before.members.items()} == {owner: "owner", alice: "admin"}

    await repo.redis.delete(repo.keys.projection_ready("groups"), repo.keys.group(group.id))
    counts = await repo.rebuild_projection()
    assert counts == {"groups": 1, "memberships": 2, "blocks": 1}
    assert await repo.load_group(group.id) == before
    assert await repo.load_group(gone.id) is None
    assert await repo.groups_of(alice) == {group.id}
    assert await repo.groups_of(bob) == set()
    assert await repo.blocked_by(owner) == {bob}


async def test_a_write_racing_a_rebuild_is_refused_then_reapplied(repo: GroupRepository) -> None:
    owner, late = new_id(), new_id()
    group = a_group(owner)
    await repo.create_group(group)
    await repo.redis.delete(repo.keys.projection_ready("groups"))
    # The projection is being reset: the MongoDB write stands, the Redis one is refused...
    with pytest.raises(ProjectionLost):
        await repo.add_member(group.id, late, Member("member", NOW))
    # ...and the rebuild, which reads MongoDB afterwards, has it.
    await repo.rebuild_projection()
    rebuilt = await repo.load_group(group.id)
    assert rebuilt is not None
    assert late in rebuilt.members
    # Re-applying the refused write (a redelivery) is harmless.
    await repo.add_member(group.id, late, Member("member", NOW))
    assert await repo.load_group(group.id) == rebuilt


async def test_one_instance_rebuilds_at_a_time(repo: GroupRepository) -> None:
    await repo.create_group(a_group(new_id(), new_id()))
    await repo.redis.delete(repo.keys.projection_ready("groups"))
    results = await asyncio.gather(*(repo.rebuild_projection() for _ in range(3)))
    assert sorted(results, key=lambda r: r is None)[0] == {
        "groups": 1,
        "memberships": 2,
        "blocks": 0,
    }
    assert results.count(None) == 2
    assert await repo.projection_ready()

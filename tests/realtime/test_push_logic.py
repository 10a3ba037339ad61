"""Unit tests of the parts of fan-out and watermarks: registry entries that expire,
which field a watermark lives in, who gets presence (real Redis)."""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from delivery_service.repository import WatermarkMove
from gateway.push import PRESENCE_GROUP_MAX_MEMBERS, presence_peers
from libs.contracts.keys import RedisKeys
from libs.group_projection import PROJECTION as GROUPS_PROJECTION
from libs.push import live_routes, route_value
from libs.receipt_projection import Watermarks
from libs.settings import ServiceSettings


def test_registry_entries_past_their_expiry_are_ignored() -> None:
    fields = {
        "c1": "gw-a|1000",
        "c2": "gw-b|2000",
        "c3": "gw|with|pipes|3000",
        "c4": "garbage",
    }
    assert live_routes(fields, now=1500) == {"c2": "gw-b", "c3": "gw|with|pipes"}
    assert live_routes(fields, now=5000) == {}
    instance, _, expires = route_value("gw-a", ttl_s=30).rpartition("|")
    assert instance == "gw-a"
    assert live_routes({"c": route_value("gw-a")}) == {"c": "gw-a"}
    assert int(expires) > 0


def test_watermark_fields() -> None:
    # An inbox: delivered per reader (its owner), read per peer (the thread).
    delivered = WatermarkMove("delivered", "user", "bob", "bob", "bob", 5)
    read = WatermarkMove("read", "user", "bob", "bob", "ada", 4)
    assert (delivered.field, read.field) == ("bob", "ada")
    # A group: both per reader.
    assert WatermarkMove("read", "group", "g1", "carol", "g1", 7).field == "carol"


def test_read_implies_delivered() -> None:
    marks = Watermarks(delivered={"bob": 3}, read={"ada": 9})
    assert marks.delivered_seq("bob", "ada") == 9
    assert marks.delivered_seq("bob", "eve") == 3
    assert marks.delivered_seq("dan", "dan") == 0


async def test_presence_peers_are_contacts_and_co_members_of_small_groups_only(
    infra: None,
) -> None:
    keys = RedisKeys("unit_" + secrets.token_hex(4))
    redis = Redis.from_url(ServiceSettings().redis_url, decode_responses=True)
    try:
        await redis.set(keys.projection_ready(GROUPS_PROJECTION), "1")
        await redis.sadd(keys.contacts("me"), "friend")
        await redis.sadd(keys.user_groups("me"), "small", "large")
        await redis.hset(keys.group_members("small"), mapping={"me": "member", "pal": "admin"})
        crowd = {f"m{n}": "member" for n in range(PRESENCE_GROUP_MAX_MEMBERS)}
        await redis.hset(keys.group_members("large"), mapping={"me": "member", **crowd})
        assert await presence_peers(redis, keys, "me") == ["friend", "pal"]
        await redis.hdel(keys.group_members("large"), "m0")  # now exactly at the limit
        peers = await presence_peers(redis, keys, "me")
        assert len(peers) == 2 + PRESENCE_GROUP_MAX_MEMBERS - 1
    finally:
        await redis.delete(*await redis.keys(keys.key("*")))
        await redis.aclose()

"""libs.storage.redis_packing: hiredis packs exactly the bytes redis-py's own packer
does, falls back to it for what hiredis does not take, and a pool's connections
using it talk to the local Redis (pipelines, scripts, multi-word commands)."""

from __future__ import annotations

import secrets

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from libs.storage.redis_packing import HiredisPacking, with_hiredis_packing
from tests.support import endpoints


class Packed(HiredisPacking, Connection):
    pass


@pytest.mark.parametrize(
    "args",
    [
        ("SET", "k", "v"),
        ("SET", "clé", "é" * 100, "EX", 10),
        (b"GET", b"raw\x00bytes"),
        ("ZADD", "z", 1e-05, "m", 2.5, "n", -3, "o", 10**20, "p"),
        ("EVALSHA", "a" * 40, 2, "k1", "k2", "", "x" * 100_000),
        ("SET", "k", memoryview(b"view")),
    ],
)
def test_the_same_bytes_as_redis_py(args: tuple) -> None:
    assert b"".join(Packed().pack_command(*args)) == b"".join(Connection().pack_command(*args))


def test_what_hiredis_does_not_take_goes_to_redis_py() -> None:
    # A multi-word command is split by redis-py into its words.
    assert b"".join(Packed().pack_command("SCRIPT LOAD", "return 1")) == b"".join(
        Connection().pack_command("SCRIPT LOAD", "return 1")
    )
    # A type Redis cannot take gets redis-py's own error.
    with pytest.raises(DataError):
        Packed().pack_command("SET", "k", None)
    with pytest.raises(DataError):
        Packed().pack_command("SET", "k", True)


async def test_a_pool_with_hiredis_packing_talks_to_redis(infra: None) -> None:
    pool = with_hiredis_packing(
        BlockingConnectionPool.from_url(endpoints.redis_url(), decode_responses=True)
    )
    assert issubclass(pool.connection_class, HiredisPacking)
    assert with_hiredis_packing(pool).connection_class is pool.connection_class  # once
    client = Redis.from_pool(pool)
    key = "packtest:" + secrets.token_hex(6)
    try:
        async with client.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={"a": "é", "b": 2})
            pipe.zadd(key + ":z", {"m": 1.5})
            pipe.expire(key, 60)
            pipe.expire(key + ":z", 60)
            await pipe.execute()
        assert await client.hgetall(key) == {"a": "é", "b": "2"}
        assert await client.zscore(key + ":z", "m") == 1.5
        sha = await client.script_load("return ARGV[1]")  # "SCRIPT LOAD": redis-py packs it
        assert await client.evalsha(sha, 0, "ok") == "ok"
    finally:
        await client.delete(key, key + ":z")
        await client.aclose()

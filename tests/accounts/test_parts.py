"""The account parts on their own, against the real Redis: GCRA buckets and argon2id."""

from __future__ import annotations

import secrets

import pytest
from redis.asyncio import Redis

from gateway.ratelimit import Limit, RateLimiter
from libs.contracts.keys import RedisKeys
from libs.errors import RateLimited
from user_service.passwords import Passwords


async def test_gcra_allows_the_burst_then_refuses_with_a_retry_time(redis: Redis) -> None:
    limiter = RateLimiter(redis, RedisKeys("unit_" + secrets.token_hex(4)))
    limit = Limit("unit", per_minute=6, burst=3)  # one every 10 s, three at once
    subject = secrets.token_hex(4)
    for _ in range(3):
        await limiter.hit(limit, subject)
    with pytest.raises(RateLimited) as refused:
        await limiter.hit(limit, subject)
    assert 0 < refused.value.details["retry_after_s"] <= 10
    # A refusal is not counted: the wait does not grow with more attempts.
    with pytest.raises(RateLimited) as again:
        await limiter.hit(limit, subject)
    assert again.value.details["retry_after_s"] <= refused.value.details["retry_after_s"]
    # Buckets are per subject.
    await limiter.hit(limit, subject + "-other")


async def test_passwords_verify_and_upgrade() -> None:
    weak = Passwords(time_cost=1, memory_kib=8 * 1024, parallelism=1)
    strong = Passwords(time_cost=2, memory_kib=19 * 1024, parallelism=1)
    stored = await weak.hash("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert await strong.verify(stored, "correct horse battery")
    assert not await strong.verify(stored, "wrong horse battery")
    assert not await strong.verify(None, "decoy password, never matches")
    assert not await strong.verify("not a hash", "correct horse battery")
    assert strong.needs_rehash(stored)
    assert not strong.needs_rehash(await strong.hash("x" * 8))

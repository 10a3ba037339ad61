"""The account parts on their own: GCRA buckets (real Redis), argon2id, the session cache."""

from __future__ import annotations

import secrets

import pytest
from redis.asyncio import Redis

from gateway.auth import Principal, SessionCache
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


class Clocks:
    """A monotonic and a wall clock that move together, by hand."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = 1_800_000_000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds


def test_session_cache_trusts_a_check_for_its_ttl_never_past_the_expiry() -> None:
    clocks = Clocks()
    cache = SessionCache(1.0, clock=lambda: clocks.now, wall_clock=lambda: clocks.wall)
    alice = Principal("alice", "h-alice")
    cache.put(alice, expires_at=clocks.wall + 3600)
    clocks.advance(0.9)
    assert cache.get("h-alice") == alice
    clocks.advance(0.2)  # 1.1 s after the check: Redis is asked again
    assert cache.get("h-alice") is None
    # A session 0.3 s from its absolute expiry is trusted for 0.3 s only.
    cache.put(alice, expires_at=clocks.wall + 0.3)
    clocks.advance(0.31)
    assert cache.get("h-alice") is None
    cache.put(alice, expires_at=clocks.wall - 1)  # already expired: not kept
    assert cache.get("h-alice") is None
    disabled = SessionCache(0, clock=lambda: clocks.now, wall_clock=lambda: clocks.wall)
    disabled.put(alice, expires_at=clocks.wall + 3600)
    assert disabled.get("h-alice") is None


def test_session_cache_forgets_what_this_gateway_revoked_and_stays_bounded() -> None:
    clocks = Clocks()
    cache = SessionCache(
        1.0, max_entries=3, clock=lambda: clocks.now, wall_clock=lambda: clocks.wall
    )
    far = clocks.wall + 3600
    for principal in (Principal("a", "a1"), Principal("a", "a2"), Principal("b", "b1")):
        cache.put(principal, far)
    cache.forget("b1")
    assert cache.get("b1") is None
    cache.forget_user("a", keep="a2")  # a password change keeps the current session
    assert (cache.get("a1"), cache.get("a2")) == (None, Principal("a", "a2"))
    cache.forget_user("a")
    assert cache.get("a2") is None
    # Full of live entries: a new one makes room by starting over, never grows past it.
    for n in range(3):
        cache.put(Principal("c", f"c{n}"), far)
    cache.put(Principal("d", "d1"), far)
    assert cache.get("d1") == Principal("d", "d1")
    assert sum(cache.get(f"c{n}") is not None for n in range(3)) == 0

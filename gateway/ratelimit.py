"""Rate limits of the gateway: GCRA buckets in Redis, shared by every gateway instance.

The generic cell rate algorithm keeps one number per bucket, its theoretical
arrival time (TAT), and decides in one Lua call on Redis's clock (so instances
with skewed clocks agree): a request is allowed while TAT - now <= burst
tolerance, and then moves TAT one emission interval on. A refusal raises
RateLimited with details {"retry_after_s"}, which gateway.errors turns into 429
with a Retry-After header.

Limits (env GATEWAY_RATE_*, gateway/settings.py):

- registration, per client address and per (lower-cased) username;
- login attempts per client address (a flood guard), and login *failures* per
  address (one address spraying passwords across accounts) and per (account,
  address) (guessing one account's password). Failures are counted after the
  answer and checked before the next attempt, so a user who types the right
  password is never slowed by others' failures. There is deliberately no limit
  per account alone: anyone could then lock a victim out by failing on purpose;
  an attacker's failures lock out only the attacker's own address;
- per authenticated user: sending messages (REST and WebSocket share the one
  send path), group changes (every command to group_service, blocks included),
  read marks and attachment uploads.

Behind a load balancer, list it in GATEWAY_RATE_TRUSTED_PROXIES so that
X-Forwarded-For names the client. The bucket key carries the limit's
parameters, so instances configured differently never share (and corrupt) a
bucket.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from aiohttp import web
from redis.asyncio import Redis

from gateway.keys import KEYS, REDIS
from gateway.settings import RateLimitSettings
from libs.contracts.keys import RedisKeys
from libs.errors import RateLimited

# Returns 0 when allowed (and records it, unless ARGV[3] is "peek"), else the
# milliseconds until it would be.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return wait end
if ARGV[3] == 'peek' then return 0 end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, math.ceil(new_tat - now)))
return 0
"""


@dataclass(frozen=True, slots=True)
class Limit:
    """`per_minute` requests a minute on average, up to `burst` at once."""

    scope: str
    per_minute: float
    burst: int

    @property
    def interval_ms(self) -> int:
        return max(1, round(60_000 / self.per_minute))

    @property
    def tolerance_ms(self) -> int:
        return self.interval_ms * (self.burst - 1)

    @property
    def bucket(self) -> str:
        return f"{self.scope}:{self.per_minute:g}x{self.burst}"


@dataclass(frozen=True, slots=True)
class RateLimits:
    login_per_ip: Limit
    login_failures_per_ip: Limit
    login_failures_per_account_ip: Limit
    register_per_ip: Limit
    register_per_username: Limit
    send_per_user: Limit
    group_changes_per_user: Limit
    read_marks_per_user: Limit
    uploads_per_user: Limit
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def from_settings(cls, s: RateLimitSettings) -> RateLimits:
        return cls(
            login_per_ip=Limit("login_ip", s.login_per_ip_per_minute, s.login_per_ip_burst),
            login_failures_per_ip=Limit(
                "login_fail_ip", s.login_failures_per_ip_per_minute, s.login_failures_per_ip_burst
            ),
            login_failures_per_account_ip=Limit(
                "login_fail_user_ip",
                s.login_failures_per_account_ip_per_minute,
                s.login_failures_per_account_ip_burst,
            ),
            register_per_ip=Limit(
                "register_ip", s.register_per_ip_per_minute, s.register_per_ip_burst
            ),
            register_per_username=Limit(
                "register_user", s.register_per_username_per_minute, s.register_per_username_burst
            ),
            send_per_user=Limit("send", s.send_per_user_per_minute, s.send_per_user_burst),
            group_changes_per_user=Limit(
                "group_changes",
                s.group_changes_per_user_per_minute,
                s.group_changes_per_user_burst,
            ),
            read_marks_per_user=Limit(
                "read_marks", s.read_marks_per_user_per_minute, s.read_marks_per_user_burst
            ),
            uploads_per_user=Limit(
                "uploads", s.uploads_per_user_per_minute, s.uploads_per_user_burst
            ),
            trusted_proxies=s.trusted_proxies,
        )


RATE_LIMITS = web.AppKey("rate_limits", RateLimits)


class RateLimiter:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys
        self._script = redis.register_script(_GCRA)

    async def hit(self, limit: Limit, subject: str, *, peek: bool = False) -> None:
        """Count one request of `subject` against `limit`; RateLimited when over it.
        `peek` only checks (the bucket is not charged)."""
        key = self._keys.rate_limit(limit.bucket, subject)
        args = [limit.interval_ms, limit.tolerance_ms, "peek" if peek else "hit"]
        wait_ms = int(await self._script(keys=[key], args=args))
        if wait_ms > 0:
            raise RateLimited(
                "too many attempts; retry later",
                details={"retry_after_s": round(wait_ms / 1000, 3), "limit": limit.scope},
            )


LIMITER = web.AppKey("rate_limiter", RateLimiter)


def setup(app: web.Application, settings: RateLimitSettings) -> None:
    """Take the limits now (settings), make the limiter once Redis is open."""
    app[RATE_LIMITS] = RateLimits.from_settings(settings)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[LIMITER] = RateLimiter(app[REDIS], app[KEYS])
        yield

    app.cleanup_ctx.append(ctx)


def _address(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text.strip())
    except ValueError:
        return None


def client_address(request: web.Request, trusted: tuple[IPv4Network | IPv6Network, ...]) -> str:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the
    nearest address in X-Forwarded-For that is not one (the rest is client-written)."""
    peer = request.remote or "unknown"
    if not trusted:
        return peer
    hops = [h for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for candidate in [peer, *reversed(hops)]:
        address = _address(candidate)
        if address is None:
            return candidate.strip()[:64]
        if not any(address in network for network in trusted):
            return str(address)
    return peer


async def limit_login(request: web.Request, username: str) -> None:
    """Before a login attempt: the address's flood guard, and its failure buckets."""
    limits = request.app[RATE_LIMITS]
    limiter = request.app[LIMITER]
    address = client_address(request, limits.trusted_proxies)
    await limiter.hit(limits.login_per_ip, address)
    await limiter.hit(limits.login_failures_per_ip, address, peek=True)
    await limiter.hit(
        limits.login_failures_per_account_ip, f"{username.lower()}|{address}", peek=True
    )


async def record_login_failure(request: web.Request, username: str) -> None:
    """After a refused login: charge the address's failure buckets (never over-charges:
    a bucket already empty is left as it is, and the 401 stands)."""
    limits = request.app[RATE_LIMITS]
    limiter = request.app[LIMITER]
    address = client_address(request, limits.trusted_proxies)
    for limit, subject in (
        (limits.login_failures_per_ip, address),
        (limits.login_failures_per_account_ip, f"{username.lower()}|{address}"),
    ):
        with contextlib.suppress(RateLimited):
            await limiter.hit(limit, subject)


async def limit_user(app: web.Application, scope: str, user_id: str) -> None:
    """Count one action of an authenticated user: scope is "send", "group_changes",
    "read_marks" or "uploads"; RateLimited (429 with Retry-After) when over the limit."""
    limits = app[RATE_LIMITS]
    limit = {
        "send": limits.send_per_user,
        "group_changes": limits.group_changes_per_user,
        "read_marks": limits.read_marks_per_user,
        "uploads": limits.uploads_per_user,
    }[scope]
    await app[LIMITER].hit(limit, user_id)


async def limit_registration(request: web.Request, username: str) -> None:
    limits = request.app[RATE_LIMITS]
    limiter = request.app[LIMITER]
    await limiter.hit(limits.register_per_ip, client_address(request, limits.trusted_proxies))
    await limiter.hit(limits.register_per_username, username.lower())

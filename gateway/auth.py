"""Authentication of HTTP requests by opaque bearer tokens (sessions live in Redis).

user_service owns sessions: `session:<sha256(token)>` is a hash {user_id,
created_at, expires_at (unix seconds), idle_s} whose TTL is the idle timeout,
and `user_sessions:<user>` indexes them. The gateway only reads a session and
extends its idle TTL (bounded by the absolute expiry); it never creates one.

A request reads Redis (one Lua call that checks and touches the session
atomically) unless this gateway checked the same token less than
GATEWAY_AUTH_CACHE_S ago (at most 1 s, never past the session's absolute
expiry): the `SessionCache`. A revocation through this gateway (log out, log out
everywhere, password change, account deletion) drops its entries at once, so it
takes effect on the next request here; user_service also announces every
revocation on the `session_revocations` channel, which every gateway's push
listener applies (gateway.push), and the cache's second bounds what a lost
announcement can let through.
Sliding the idle TTL once a second instead of per request changes nothing for
idle timeouts of minutes.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.keys import KEYS, REDIS, SESSION_CACHE
from libs.errors import Unauthorized

#: Tokens are secrets.token_urlsafe output; anything else cannot be one of ours.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,256}$")

# Returns nil (no session), {user_id, "expired"} or {user_id, "ok", expires_at} after
# touching it.
_TOUCH_SESSION = """
local s = redis.call('HMGET', KEYS[1], 'user_id', 'expires_at', 'idle_s')
if not s[1] then return nil end
local now = tonumber(ARGV[1])
local expires_at = tonumber(s[2]) or 0
if expires_at <= now then return {s[1], 'expired'} end
local idle = tonumber(s[3]) or 0
if idle > 0 then
  redis.call('EXPIRE', KEYS[1], math.max(1, math.min(idle, math.floor(expires_at - now))))
end
return {s[1], 'ok', s[2]}
"""


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    user_id: str
    token_hash: str
    #: The session's absolute expiry (unix seconds), when known.
    expires_at: float = math.inf


@dataclass(frozen=True, slots=True)
class _Checked:
    principal: Principal
    until: float  # on the cache's clock


class SessionCache:
    """Tokens this gateway found valid in the last `ttl_s` seconds, by token hash.

    Bounded: when full, the entries past their time go, and if none did, all of
    them (they are a second's worth of checks; the next requests refill it).
    """

    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._wall_clock = wall_clock
        self._entries: dict[str, _Checked] = {}

    def get(self, hashed: str) -> Principal | None:
        checked = self._entries.get(hashed)
        if checked is None:
            return None
        if checked.until <= self._clock():
            del self._entries[hashed]
            return None
        return checked.principal

    def put(self, principal: Principal, expires_at: float) -> None:
        """Remember a valid session until ttl_s from now or its absolute expiry
        (`expires_at`, unix seconds), whichever is first."""
        if self.ttl_s <= 0:
            return
        now = self._clock()
        until = now + min(self.ttl_s, expires_at - self._wall_clock())
        if until <= now:
            return
        if len(self._entries) >= self.max_entries:
            self._entries = {h: c for h, c in self._entries.items() if c.until > now}
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
        self._entries[principal.token_hash] = _Checked(principal, until)

    def forget(self, *hashed: str) -> None:
        """These sessions were revoked (through this gateway, or announced by Redis)."""
        for one in hashed:
            self._entries.pop(one, None)

    def forget_user(self, user_id: str, *, keep: str | None = None) -> None:
        """Every session of `user_id` (but `keep`, a token hash) was revoked here."""
        self._entries = {
            h: c for h, c in self._entries.items() if c.principal.user_id != user_id or h == keep
        }


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a bearer token is required", code="missing_token")
    token = token.strip()
    if not _TOKEN_RE.match(token):
        raise Unauthorized("the token is malformed", code="invalid_token")
    return token


async def authenticate(request: web.Request) -> Principal:
    """The caller of `request`, or Unauthorized (401)."""
    return await authenticate_token(request.app, bearer_token(request))


async def authenticate_token(app: web.Application, token: str) -> Principal:
    """The owner of `token` (also for WebSocket handshakes), or Unauthorized."""
    hashed = token_hash(token)
    cache = app[SESSION_CACHE]
    principal = cache.get(hashed)
    if principal is not None:
        return principal
    touch = app[REDIS].register_script(_TOUCH_SESSION)
    found = await touch(keys=[app[KEYS].session(hashed)], args=[repr(time.time())])
    if not found:
        raise Unauthorized("the token is invalid, expired or revoked", code="invalid_token")
    user_id, state = found[0], found[1]
    if state != "ok":
        raise Unauthorized("the session has expired", code="session_expired")
    principal = Principal(user_id=user_id, token_hash=hashed, expires_at=float(found[2]))
    cache.put(principal, principal.expires_at)
    return principal

"""Authentication of HTTP requests by opaque bearer tokens (sessions live in Redis).

user_service owns sessions: `session:<sha256(token)>` is a hash {user_id,
created_at, expires_at (unix seconds), idle_s} whose TTL is the idle timeout,
and `user_sessions:<user>` indexes them. The gateway only reads a session and
extends its idle TTL (bounded by the absolute expiry); it never creates one.

There is no local cache: every request reads Redis (one Lua call that checks
and touches the session atomically), so a revocation takes effect on the next
request, on every gateway instance.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass

from aiohttp import web

from gateway.keys import KEYS, REDIS
from libs.errors import Unauthorized

#: Tokens are secrets.token_urlsafe output; anything else cannot be one of ours.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,256}$")

# Returns nil (no session), {user_id, "expired"} or {user_id, "ok"} after touching it.
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
return {s[1], 'ok'}
"""


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    user_id: str
    token_hash: str


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
    redis = app[REDIS]
    touch = redis.register_script(_TOUCH_SESSION)
    found = await touch(keys=[app[KEYS].session(hashed)], args=[repr(time.time())])
    if not found:
        raise Unauthorized("the token is invalid, expired or revoked", code="invalid_token")
    user_id, state = found
    if state != "ok":
        raise Unauthorized("the session has expired", code="session_expired")
    return Principal(user_id=user_id, token_hash=hashed)

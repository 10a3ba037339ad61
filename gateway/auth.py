"""Authentication of HTTP requests by opaque bearer tokens (sessions live in Redis).

user_service owns sessions: `session:<sha256(token)>` is a hash {user_id,
created_at, expires_at} whose TTL is the idle timeout, and `user_sessions:<user>`
indexes them. The gateway only reads a session and extends its idle TTL
(bounded by the absolute expiry); it never creates one.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from aiohttp import web

from gateway.keys import KEYS, REDIS
from libs.errors import Unauthorized


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
    if len(token) > 256 or not token.isascii():
        raise Unauthorized("the token is malformed", code="invalid_token")
    return token


async def authenticate(request: web.Request) -> Principal:
    """The caller of `request`, or Unauthorized (401)."""
    return await authenticate_token(request.app, bearer_token(request))


async def authenticate_token(app: web.Application, token: str) -> Principal:
    hashed = token_hash(token)
    key = app[KEYS].session(hashed)
    session = await app[REDIS].hgetall(key)
    if not session or "user_id" not in session:
        raise Unauthorized("the token is invalid, expired or revoked", code="invalid_token")
    expires_at = float(session.get("expires_at", "0"))
    now = time.time()
    if expires_at <= now:
        raise Unauthorized("the session has expired", code="session_expired")
    idle = int(session.get("idle_s", "0"))
    if idle > 0:
        await app[REDIS].expire(key, max(1, min(idle, int(expires_at - now))))
    return Principal(user_id=session["user_id"], token_hash=hashed)

"""Typed application keys of the gateway: the one module that names them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from libs.bus.request_reply import RequestClient
from libs.contracts.keys import RedisKeys
from libs.lifecycle import MONGO, PRODUCER, REDIS

__all__ = [
    "ATTACHMENTS",
    "AUTHENTICATOR",
    "KEYS",
    "MONGO",
    "PRODUCER",
    "REDIS",
    "REQUESTS",
    "SESSION_CACHE",
    "SETTINGS",
]

if TYPE_CHECKING:
    from gateway.auth import SessionCache
    from gateway.settings import GatewaySettings
    from libs.media.attachments import Attachments

SETTINGS: web.AppKey[GatewaySettings] = web.AppKey("settings")
KEYS = web.AppKey("redis_keys", RedisKeys)
REQUESTS = web.AppKey("requests", RequestClient)
SESSION_CACHE: web.AppKey[SessionCache] = web.AppKey("session_cache")
#: async (request) -> Principal; raises Unauthorized. Set by gateway.auth.
AUTHENTICATOR: web.AppKey[Callable[[web.Request], Awaitable[Any]]] = web.AppKey("authenticator")
#: The attachments service (gateway.media opens it).
ATTACHMENTS: web.AppKey[Attachments] = web.AppKey("attachments")

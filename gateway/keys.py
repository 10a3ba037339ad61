"""Typed application keys of the gateway: the one module that names them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from redis.asyncio import Redis

from libs.bus.producer import Producer
from libs.bus.request_reply import RequestClient
from libs.contracts.keys import RedisKeys
from libs.storage.mongo import MongoShards

if TYPE_CHECKING:
    from gateway.settings import GatewaySettings

SETTINGS: web.AppKey[GatewaySettings] = web.AppKey("settings")
REDIS = web.AppKey("redis", Redis)
KEYS = web.AppKey("redis_keys", RedisKeys)
PRODUCER = web.AppKey("producer", Producer)
REQUESTS = web.AppKey("requests", RequestClient)
MONGO = web.AppKey("mongo", MongoShards)
#: async (request) -> Principal; raises Unauthorized. Set by gateway.auth.
AUTHENTICATOR: web.AppKey[Callable[[web.Request], Awaitable[Any]]] = web.AppKey("authenticator")

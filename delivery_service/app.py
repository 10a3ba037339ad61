"""Builds delivery_service from settings (no I/O until the app starts)."""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from delivery_service.settings import DeliveryServiceSettings
from libs.bus.producer import Producer
from libs.lifecycle import create_base_app, mongo_context, producer_context, redis_context
from libs.storage.mongo import MongoShards

REDIS = web.AppKey("redis", Redis)
MONGO = web.AppKey("mongo", MongoShards)
PRODUCER = web.AppKey("producer", Producer)


def create_app(settings: DeliveryServiceSettings) -> web.Application:
    app = create_base_app("delivery_service")
    app.cleanup_ctx.append(redis_context(REDIS, settings.redis_url))
    app.cleanup_ctx.append(mongo_context(MONGO, settings))
    app.cleanup_ctx.append(producer_context(PRODUCER, settings))
    return app

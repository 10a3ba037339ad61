"""Builds the gateway application from settings (no I/O until the app starts)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway import api, auth
from gateway.errors import error_middleware
from gateway.keys import (
    AUTHENTICATOR,
    KEYS,
    MONGO,
    PRODUCER,
    REDIS,
    REQUESTS,
    SESSION_CACHE,
    SETTINGS,
)
from gateway.routes import (
    accounts,
    attachments,
    conversations,
    docs,
    groups,
    message_changes,
    messages,
    push_targets,
    realtime,
    webapp,
)
from gateway.settings import GatewaySettings
from libs.bus.request_reply import RequestClient
from libs.contracts.keys import RedisKeys
from libs.lifecycle import (
    add_readiness_check,
    create_base_app,
    mongo_context,
    producer_context,
    redis_context,
)

ROUTE_MODULES = (
    accounts,
    groups,
    messages,
    message_changes,
    conversations,
    attachments,
    push_targets,
    realtime,
    docs,
    webapp,
)
ROUTE_TABLES = tuple(module.routes for module in ROUTE_MODULES)


def create_app(settings: GatewaySettings) -> web.Application:
    app = create_base_app(
        "gateway", client_max_size=settings.max_body_bytes, middlewares=(error_middleware,)
    )
    app[SETTINGS] = settings
    app[KEYS] = RedisKeys(settings.namespace)
    app[AUTHENTICATOR] = auth.authenticate
    app[SESSION_CACHE] = auth.SessionCache(settings.auth_cache_s)
    app.cleanup_ctx.append(redis_context(REDIS, settings.redis_url))
    app.cleanup_ctx.append(mongo_context(MONGO, settings))
    app.cleanup_ctx.append(producer_context(PRODUCER, settings, linger_ms=0))
    app.cleanup_ctx.append(_request_client(settings))
    for module in ROUTE_MODULES:
        setup = getattr(module, "setup", None)
        if setup is not None:
            setup(app, settings)
    api.install(app, ROUTE_TABLES)
    return app


def _request_client(settings: GatewaySettings):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        client = RequestClient(
            app[PRODUCER],
            bootstrap=settings.kafka_bootstrap_servers,
            namespace=settings.namespace,
            instance_id=settings.instance_id,
            default_timeout_s=settings.request_timeout_s,
            replication=settings.kafka_replication_factor,
        )
        await client.start()
        app[REQUESTS] = client

        async def ready() -> bool:
            return client.healthy

        add_readiness_check(app, "replies", ready)
        try:
            yield
        finally:
            await client.stop()

    return ctx

"""Declares the gateway (libs/service.py): no I/O until the app starts.

Opens Redis, MongoDB (the attachment catalog's and the push targets'
collections), the producer (no linger: a request waits on its send) and the
request/reply client; each route module's `setup` adds what it needs (rate
limiter, sockets, attachment store...). No consumer loop: the gateway's one
Kafka reader is the reply topic of the request client. /metrics is on a listener
of its own (GATEWAY_METRICS_PORT): the API port is public.
"""

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
from libs.lifecycle import add_readiness_check
from libs.media import catalog
from libs.push_targets import COLLECTIONS as PUSH_TARGET_COLLECTIONS
from libs.service import Service

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


async def _request_client(app: web.Application, settings: GatewaySettings) -> AsyncIterator[None]:
    """Commands out through the producer, replies in on this instance's reply topic."""
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


def _setup(app: web.Application, settings: GatewaySettings) -> None:
    """App state, then each route module's resources, then the routes (no I/O)."""
    app[SETTINGS] = settings
    app[KEYS] = RedisKeys(settings.namespace)
    app[AUTHENTICATOR] = auth.authenticate
    app[SESSION_CACHE] = auth.SessionCache(settings.auth_cache_s)
    for module in ROUTE_MODULES:
        setup = getattr(module, "setup", None)
        if setup is not None:
            setup(app, settings)
    api.install(app, ROUTE_TABLES)


SERVICE = Service(
    name="gateway",
    settings=GatewaySettings,
    resources=(REDIS, MONGO, PRODUCER),
    collections=(*catalog.COLLECTIONS, *PUSH_TARGET_COLLECTIONS),
    producer_linger_ms=0,
    contexts=(_request_client,),
    setup=_setup,
    middlewares=(error_middleware,),
    client_max_size=lambda settings: settings.max_body_bytes,
)

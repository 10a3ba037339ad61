"""Builds delivery_service from settings (no I/O until the app starts).

One consumer loop (group `delivery_service`) reads messages.events.v1,
receipts.commands.v1, receipts.events.v1 and groups.events.v1; see handlers.py. At start the
watermarks collection is bootstrapped and the Redis watermark cache rebuilt from
MongoDB when its sentinel is missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

from aiohttp import web

from delivery_service.handlers import handle_batch
from delivery_service.repository import WATERMARKS, DeliveryRepository
from delivery_service.settings import DeliveryServiceSettings
from libs.bus.consumer import ConsumerLoop
from libs.contracts.envelope import Codec
from libs.contracts.groups import GROUP_EVENTS
from libs.contracts.keys import RedisKeys
from libs.contracts.messages import MESSAGE_EVENTS
from libs.contracts.receipts import RECEIPT_COMMANDS, RECEIPT_EVENTS
from libs.contracts.topics import (
    GROUPS_EVENTS,
    MESSAGES_EVENTS,
    RECEIPTS_COMMANDS,
    RECEIPTS_EVENTS,
)
from libs.lifecycle import (
    MONGO,
    PRODUCER,
    REDIS,
    consumer_context,
    create_base_app,
    mongo_context,
    producer_context,
    redis_context,
)
from libs.logging import get_logger
from libs.storage.mongo import bootstrap_collections

log = get_logger(__name__)

REPOSITORY = web.AppKey("repository", DeliveryRepository)


def create_app(settings: DeliveryServiceSettings) -> web.Application:
    app = create_base_app("delivery_service")
    keys = RedisKeys(settings.namespace)
    app.cleanup_ctx.append(redis_context(REDIS, settings.redis_url))
    app.cleanup_ctx.append(mongo_context(MONGO, settings))
    app.cleanup_ctx.append(producer_context(PRODUCER, settings))

    async def storage(app: web.Application) -> AsyncIterator[None]:
        await bootstrap_collections(app[MONGO], [WATERMARKS])
        repository = DeliveryRepository(app[REDIS], keys, app[MONGO])
        if not await repository.projection_ready():
            count = await repository.rebuild_projection()
            log.info("receipts projection rebuilt", watermarks=count)
        app[REPOSITORY] = repository
        yield

    app.cleanup_ctx.append(storage)

    def build(app: web.Application) -> ConsumerLoop:
        return ConsumerLoop(
            group=settings.consumer_group("delivery_service"),
            topics=[MESSAGES_EVENTS, RECEIPTS_COMMANDS, RECEIPTS_EVENTS, GROUPS_EVENTS],
            codec=Codec(*MESSAGE_EVENTS, *RECEIPT_COMMANDS, *RECEIPT_EVENTS, *GROUP_EVENTS),
            handler=partial(handle_batch, repository=app[REPOSITORY], redis=app[REDIS], keys=keys),
            producer=app[PRODUCER],
            bootstrap=settings.kafka_bootstrap_servers,
            namespace=settings.namespace,
            max_batch=settings.max_batch,
            linger_ms=settings.linger_ms,
        )

    app.cleanup_ctx.append(consumer_context(build))
    return app

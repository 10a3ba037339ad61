"""Builds delivery_service from settings (no I/O until the app starts).

One consumer loop (group `delivery_service`) reads messages.events.v1,
receipts.commands.v1, receipts.events.v1, groups.events.v1 and
conversations.commands.v1; see handlers.py. At start the
watermarks collection is bootstrapped and the Redis watermark cache rebuilt from
MongoDB when its sentinel is missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

from aiohttp import web

from delivery_service.handlers import handle_batch
from delivery_service.inbox import SETTINGS as INBOX_SETTINGS
from delivery_service.inbox import InboxRepository
from delivery_service.repository import WATERMARKS, DeliveryRepository
from delivery_service.settings import DeliveryServiceSettings
from libs.bus.consumer import ConsumerLoop
from libs.contracts.conversations import CONVERSATION_COMMANDS, MESSAGE_EVENTS
from libs.contracts.envelope import Codec
from libs.contracts.groups import GROUP_EVENTS
from libs.contracts.keys import RedisKeys
from libs.contracts.receipts import RECEIPT_COMMANDS, RECEIPT_EVENTS
from libs.contracts.topics import (
    CONVERSATIONS_COMMANDS,
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
INBOX = web.AppKey("inbox", InboxRepository)


def create_app(settings: DeliveryServiceSettings) -> web.Application:
    app = create_base_app("delivery_service")
    keys = RedisKeys(settings.namespace)
    app.cleanup_ctx.append(redis_context(REDIS, settings.redis_url))
    app.cleanup_ctx.append(mongo_context(MONGO, settings))
    app.cleanup_ctx.append(producer_context(PRODUCER, settings))

    async def storage(app: web.Application) -> AsyncIterator[None]:
        await bootstrap_collections(app[MONGO], [WATERMARKS, INBOX_SETTINGS])
        repository = DeliveryRepository(app[REDIS], keys, app[MONGO])
        if not await repository.projection_ready():
            count = await repository.rebuild_projection()
            log.info("receipts projection rebuilt", watermarks=count)
        app[REPOSITORY] = repository
        inbox = InboxRepository(app[REDIS], keys, app[MONGO])
        if not await inbox.projection_ready():
            log.info("inbox settings reloaded", settings=await inbox.reload_settings())
        app[INBOX] = inbox
        yield

    app.cleanup_ctx.append(storage)

    def build(app: web.Application) -> ConsumerLoop:
        return ConsumerLoop(
            group=settings.consumer_group("delivery_service"),
            topics=[
                MESSAGES_EVENTS,
                RECEIPTS_COMMANDS,
                RECEIPTS_EVENTS,
                GROUPS_EVENTS,
                CONVERSATIONS_COMMANDS,
            ],
            codec=Codec(
                *MESSAGE_EVENTS,
                *RECEIPT_COMMANDS,
                *RECEIPT_EVENTS,
                *GROUP_EVENTS,
                *CONVERSATION_COMMANDS,
            ),
            handler=partial(
                handle_batch,
                repository=app[REPOSITORY],
                inbox=app[INBOX],
                redis=app[REDIS],
                keys=keys,
            ),
            producer=app[PRODUCER],
            bootstrap=settings.kafka_bootstrap_servers,
            namespace=settings.namespace,
            max_batch=settings.batch_max_records,
            linger_ms=settings.batch_linger_ms,
        )

    app.cleanup_ctx.append(consumer_context(build))
    return app

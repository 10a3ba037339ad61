"""Declares delivery_service (libs/service.py): no I/O until the app starts.

One consumer loop (group `delivery_service`) reads messages.events.v1,
receipts.commands.v1, receipts.events.v1, groups.events.v1 and
conversations.commands.v1; see handlers.py. At start the watermarks and inbox
settings collections are bootstrapped, the Redis watermark cache is rebuilt from
MongoDB when its sentinel is missing, and so are the inbox settings.
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
from libs.bus.consumer import BatchHandler
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
from libs.lifecycle import MONGO, PRODUCER, REDIS
from libs.logging import get_logger
from libs.service import Consumer, Service

log = get_logger(__name__)

REPOSITORY = web.AppKey("repository", DeliveryRepository)
INBOX = web.AppKey("inbox", InboxRepository)


async def _storage(app: web.Application, settings: DeliveryServiceSettings) -> AsyncIterator[None]:
    """The repositories, their Redis projections complete before the first batch."""
    keys = RedisKeys(settings.namespace)
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


def _handler(app: web.Application, settings: DeliveryServiceSettings) -> BatchHandler:
    return partial(
        handle_batch,
        repository=app[REPOSITORY],
        inbox=app[INBOX],
        redis=app[REDIS],
        keys=RedisKeys(settings.namespace),
    )


SERVICE = Service(
    name="delivery_service",
    settings=DeliveryServiceSettings,
    resources=(REDIS, MONGO, PRODUCER),
    collections=(WATERMARKS, INBOX_SETTINGS),
    contexts=(_storage,),
    consumers=(
        Consumer(
            topics=(
                MESSAGES_EVENTS,
                RECEIPTS_COMMANDS,
                RECEIPTS_EVENTS,
                GROUPS_EVENTS,
                CONVERSATIONS_COMMANDS,
            ),
            codec=Codec(
                *MESSAGE_EVENTS,
                *RECEIPT_COMMANDS,
                *RECEIPT_EVENTS,
                *GROUP_EVENTS,
                *CONVERSATION_COMMANDS,
            ),
            handler=_handler,
        ),
    ),
)

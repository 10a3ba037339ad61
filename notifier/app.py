"""Builds the notifier from settings (no I/O until the app starts).

One consumer loop (group `notifier`, its own: delivery to sockets never waits
for it) reads messages.events.v1; handlers.consider_messages queues offline
recipients into bursts, handlers.notify sends each burst's notification. On
SIGTERM the loop stops first, then the open bursts are flushed and sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from functools import partial

import aiohttp
from aiohttp import web

from libs.bus.consumer import ConsumerLoop, Delivery
from libs.bus.outbox import Outbox
from libs.contracts.conversations import MESSAGE_EVENTS
from libs.contracts.envelope import Codec
from libs.contracts.keys import RedisKeys
from libs.contracts.messages import MessageAccepted
from libs.contracts.topics import MESSAGES_EVENTS
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
from libs.push_targets import COLLECTIONS, PushTargets, VapidKeys
from libs.storage.mongo import bootstrap_collections
from notifier.coalescing import Burst, Coalescer
from notifier.handlers import PayloadPolicy, consider_messages, notify
from notifier.repository import NotifierRepository
from notifier.sending import TargetSender
from notifier.settings import NotifierSettings

COALESCER = web.AppKey("coalescer", Coalescer)
REPOSITORY = web.AppKey("repository", NotifierRepository)


async def handle_batch(
    deliveries: list[Delivery],
    outbox: Outbox,
    *,
    repository: NotifierRepository,
    coalescer: Coalescer,
    max_age: timedelta,
) -> None:
    messages = [d.message.payload for d in deliveries if isinstance(d.message, MessageAccepted)]
    await consider_messages(messages, repository=repository, coalescer=coalescer, max_age=max_age)


def create_app(settings: NotifierSettings) -> web.Application:
    app = create_base_app("notifier")
    keys = RedisKeys(settings.namespace)
    app.cleanup_ctx.append(redis_context(REDIS, settings.redis_url))
    app.cleanup_ctx.append(mongo_context(MONGO, settings))
    app.cleanup_ctx.append(producer_context(PRODUCER, settings))

    async def notifying(app: web.Application) -> AsyncIterator[None]:
        await bootstrap_collections(app[MONGO], COLLECTIONS)
        repository = NotifierRepository(app[REDIS], keys, PushTargets(app[MONGO]))
        vapid = await VapidKeys(app[MONGO], settings.vapid_private_key).load()
        async with aiohttp.ClientSession() as session:
            sender = TargetSender(
                session,
                vapid,
                vapid_subject=settings.vapid_subject,
                timeout_s=settings.send_timeout_s,
                max_attempts=settings.max_attempts,
                backoff_s=settings.backoff_s,
                webpush_ttl_s=settings.webpush_ttl_s,
                max_concurrent=settings.max_concurrent_sends,
            )
            policy = PayloadPolicy(settings.previews, settings.preview_chars)

            async def flush(burst: Burst) -> None:
                await notify(burst, repository=repository, sender=sender, policy=policy)

            coalescer = Coalescer(settings.coalesce_window_s, flush)
            app[REPOSITORY] = repository
            app[COALESCER] = coalescer
            try:
                yield
            finally:
                await coalescer.close()

    app.cleanup_ctx.append(notifying)

    def build(app: web.Application) -> ConsumerLoop:
        return ConsumerLoop(
            group=settings.consumer_group("notifier"),
            topics=[MESSAGES_EVENTS],
            codec=Codec(*MESSAGE_EVENTS),
            handler=partial(
                handle_batch,
                repository=app[REPOSITORY],
                coalescer=app[COALESCER],
                max_age=timedelta(seconds=settings.max_message_age_s),
            ),
            producer=app[PRODUCER],
            bootstrap=settings.kafka_bootstrap_servers,
            namespace=settings.namespace,
            max_batch=settings.batch_max_records,
            linger_ms=settings.batch_linger_ms,
        )

    app.cleanup_ctx.append(consumer_context(build))
    return app

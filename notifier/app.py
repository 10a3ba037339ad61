"""Declares the notifier (libs/service.py): no I/O until the app starts.

One consumer loop (group `notifier`, its own: delivery to sockets never waits
for it) reads messages.events.v1; handlers.handle_batch queues offline
recipients into bursts, handlers.notify sends each burst's notification. On
SIGTERM the loop stops first, then the open bursts are flushed and sent (the
`_notifying` context closes after it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from functools import partial

import aiohttp
from aiohttp import web

from libs.bus.consumer import BatchHandler
from libs.contracts.conversations import MESSAGE_EVENTS
from libs.contracts.envelope import Codec
from libs.contracts.keys import RedisKeys
from libs.contracts.topics import MESSAGES_EVENTS
from libs.lifecycle import MONGO, PRODUCER, REDIS
from libs.push_targets import COLLECTIONS, PushTargets, VapidKeys
from libs.service import Consumer, Service
from notifier.coalescing import Burst, Coalescer
from notifier.handlers import PayloadPolicy, handle_batch, notify
from notifier.repository import NotifierRepository
from notifier.sending import TargetSender
from notifier.settings import NotifierSettings

COALESCER = web.AppKey("coalescer", Coalescer)
REPOSITORY = web.AppKey("repository", NotifierRepository)


async def _notifying(app: web.Application, settings: NotifierSettings) -> AsyncIterator[None]:
    """The repository, the HTTP client of the targets, and the bursts (flushed on exit)."""
    repository = NotifierRepository(
        app[REDIS], RedisKeys(settings.namespace), PushTargets(app[MONGO])
    )
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


def _handler(app: web.Application, settings: NotifierSettings) -> BatchHandler:
    return partial(
        handle_batch,
        repository=app[REPOSITORY],
        coalescer=app[COALESCER],
        max_age=timedelta(seconds=settings.max_message_age_s),
    )


SERVICE = Service(
    name="notifier",
    settings=NotifierSettings,
    resources=(REDIS, MONGO, PRODUCER),
    collections=COLLECTIONS,
    contexts=(_notifying,),
    consumers=(
        Consumer(topics=(MESSAGES_EVENTS,), codec=Codec(*MESSAGE_EVENTS), handler=_handler),
    ),
)

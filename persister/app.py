"""Builds persister from settings (no I/O until the app starts).

Consumes messages.events.v1 in its own group and batches MessageAccepted into
the `messages` collection of each shard (created with its indexes at start).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

from aiohttp import web

from libs.bus.consumer import ConsumerLoop
from libs.contracts.conversations import MESSAGE_EVENTS
from libs.contracts.envelope import Codec
from libs.contracts.topics import MESSAGES_EVENTS
from libs.lifecycle import (
    MONGO,
    PRODUCER,
    consumer_context,
    create_base_app,
    mongo_context,
    producer_context,
)
from libs.storage.mongo import bootstrap_collections
from persister.changes import EVENT_COLLECTIONS, EventStore
from persister.handlers import persist_batch
from persister.repository import COLLECTIONS, MessageStore
from persister.settings import PersisterSettings


def create_app(settings: PersisterSettings) -> web.Application:
    app = create_base_app("persister")
    app.cleanup_ctx.append(mongo_context(MONGO, settings))
    app.cleanup_ctx.append(_bootstrap)
    # The producer carries dead letters (undecodable events) only.
    app.cleanup_ctx.append(producer_context(PRODUCER, settings))
    app.cleanup_ctx.append(consumer_context(partial(_consumer, settings=settings)))
    return app


async def _bootstrap(app: web.Application) -> AsyncIterator[None]:
    await bootstrap_collections(app[MONGO], (*COLLECTIONS, *EVENT_COLLECTIONS))
    yield


def _consumer(app: web.Application, *, settings: PersisterSettings) -> ConsumerLoop:
    return ConsumerLoop(
        group=settings.consumer_group("persister"),
        topics=[MESSAGES_EVENTS],
        codec=Codec(*MESSAGE_EVENTS),
        handler=partial(
            persist_batch, store=MessageStore(app[MONGO]), events=EventStore(app[MONGO])
        ),
        producer=app[PRODUCER],
        bootstrap=settings.kafka_bootstrap_servers,
        namespace=settings.namespace,
        max_batch=settings.batch_max_records,
        linger_ms=settings.batch_linger_ms,
        max_retry_backoff_s=settings.max_retry_backoff_s,
    )

"""Builds message_service from settings (no I/O until the app starts).

Consumes messages.commands.v1 in batches (handlers.handle_send_batch), keeps its
ledger collections on every shard (created at start), and forgets its in-memory
sequence positions whenever partitions move (writing the sequence counters
behind them first, and once more when the service stops).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

from aiohttp import web

from libs.bus.consumer import ConsumerLoop
from libs.contracts.conversations import MESSAGE_COMMANDS
from libs.contracts.envelope import Codec
from libs.contracts.keys import RedisKeys
from libs.contracts.topics import MESSAGES_COMMANDS
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
from libs.storage.mongo import bootstrap_collections
from message_service.handlers import Validator, handle_send_batch
from message_service.message_state import MessageStates
from message_service.repository import COLLECTIONS, Ledger, RecentCache
from message_service.sequencing import Sequencer
from message_service.settings import MessageServiceSettings

SEQUENCER = web.AppKey("sequencer", Sequencer)


def create_app(settings: MessageServiceSettings) -> web.Application:
    app = create_base_app("message_service")
    app.cleanup_ctx.append(redis_context(REDIS, settings.redis_url))
    app.cleanup_ctx.append(mongo_context(MONGO, settings))
    app.cleanup_ctx.append(_bootstrap)
    app.cleanup_ctx.append(producer_context(PRODUCER, settings))
    app.cleanup_ctx.append(partial(_sequencer, settings=settings))
    app.cleanup_ctx.append(consumer_context(partial(_consumer, settings=settings)))
    return app


async def _bootstrap(app: web.Application) -> AsyncIterator[None]:
    await bootstrap_collections(app[MONGO], COLLECTIONS)
    yield


async def _sequencer(
    app: web.Application, *, settings: MessageServiceSettings
) -> AsyncIterator[None]:
    """The sequencer outlives the consumer: its counters are written after the last batch."""
    app[SEQUENCER] = Sequencer(
        Ledger(app[MONGO]),
        dedupe_memory=settings.dedupe_memory,
        counter_interval_s=settings.counter_interval_s,
    )
    yield
    await app[SEQUENCER].flush_counters()


def _consumer(app: web.Application, *, settings: MessageServiceSettings) -> ConsumerLoop:
    keys = RedisKeys(settings.namespace)
    sequencer = app[SEQUENCER]
    cache = RecentCache(
        app[REDIS],
        keys,
        cap=settings.recent_per_conversation,
        inbox_cap=settings.recent_per_receiver,
        ttl_s=settings.recent_ttl_s,
    )

    states = MessageStates(app[MONGO])

    async def forget(_: set[tuple[str, int]]) -> None:
        await sequencer.forget()
        states.forget()

    return ConsumerLoop(
        group=settings.consumer_group("message_service"),
        topics=[MESSAGES_COMMANDS],
        codec=Codec(*MESSAGE_COMMANDS),
        handler=partial(
            handle_send_batch,
            validator=Validator(app[REDIS], keys),
            sequencer=sequencer,
            cache=cache,
            states=states,
            edit_window_s=settings.edit_window_s,
        ),
        producer=app[PRODUCER],
        bootstrap=settings.kafka_bootstrap_servers,
        namespace=settings.namespace,
        max_batch=settings.batch_max_records,
        linger_ms=settings.batch_linger_ms,
        on_assigned=forget,
        on_revoked=forget,
    )

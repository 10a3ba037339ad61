"""Declares message_service (libs/service.py): no I/O until the app starts.

Consumes messages.commands.v1 in batches (handlers.handle_send_batch), keeps its
ledger collections on every shard (created at start), and forgets its in-memory
sequence positions and message states whenever partitions move (writing the
sequence counters behind them first, and once more when the service stops: the
sequencer's context closes after the consumer loop).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

from aiohttp import web

from libs.bus.consumer import BatchHandler, PartitionsCallback
from libs.contracts.conversations import MESSAGE_COMMANDS
from libs.contracts.envelope import Codec
from libs.contracts.keys import RedisKeys
from libs.contracts.topics import MESSAGES_COMMANDS
from libs.lifecycle import MONGO, PRODUCER, REDIS
from libs.readmodels.messages import RecentCache
from libs.service import Consumer, Service
from message_service.handlers import Validator, handle_send_batch
from message_service.message_state import MessageStates
from message_service.repository import COLLECTIONS, Ledger
from message_service.sequencing import Sequencer
from message_service.settings import MessageServiceSettings

SEQUENCER = web.AppKey("sequencer", Sequencer)
STATES = web.AppKey("message_states", MessageStates)


async def _sequencer(app: web.Application, settings: MessageServiceSettings) -> AsyncIterator[None]:
    """The sequencer outlives the consumer: its counters are written after the last batch."""
    app[SEQUENCER] = Sequencer(
        Ledger(app[MONGO]),
        dedupe_memory=settings.dedupe_memory,
        counter_interval_s=settings.counter_interval_s,
    )
    app[STATES] = MessageStates(app[MONGO])
    yield
    await app[SEQUENCER].flush_counters()


def _handler(app: web.Application, settings: MessageServiceSettings) -> BatchHandler:
    keys = RedisKeys(settings.namespace)
    cache = RecentCache(
        app[REDIS],
        keys,
        cap=settings.recent_per_conversation,
        inbox_cap=settings.recent_per_receiver,
        ttl_s=settings.recent_ttl_s,
    )
    return partial(
        handle_send_batch,
        validator=Validator(app[REDIS], keys),
        sequencer=app[SEQUENCER],
        cache=cache,
        states=app[STATES],
        edit_window_s=settings.edit_window_s,
    )


def _forget(app: web.Application, settings: MessageServiceSettings) -> PartitionsCallback:
    sequencer, states = app[SEQUENCER], app[STATES]

    async def forget(_: set[tuple[str, int]]) -> None:
        await sequencer.forget()
        states.forget()

    return forget


SERVICE = Service(
    name="message_service",
    settings=MessageServiceSettings,
    resources=(REDIS, MONGO, PRODUCER),
    collections=COLLECTIONS,
    contexts=(_sequencer,),
    consumers=(
        Consumer(
            topics=(MESSAGES_COMMANDS,),
            codec=Codec(*MESSAGE_COMMANDS),
            handler=_handler,
            on_assigned=_forget,
            on_revoked=_forget,
        ),
    ),
)

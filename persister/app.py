"""Declares persister (libs/service.py): no I/O until the app starts.

Consumes messages.events.v1 in its own group and batches MessageAccepted into
the `messages` collection of each shard (created with its indexes at start).
The producer carries dead letters (undecodable events) only.
"""

from __future__ import annotations

from functools import partial

from aiohttp import web

from libs.bus.consumer import BatchHandler
from libs.contracts.conversations import MESSAGE_EVENTS
from libs.contracts.envelope import Codec
from libs.contracts.topics import MESSAGES_EVENTS
from libs.lifecycle import MONGO, PRODUCER
from libs.service import Consumer, Service
from persister.changes import EventStore
from persister.handlers import persist_batch
from persister.repository import COLLECTIONS, MessageStore
from persister.settings import PersisterSettings


def _handler(app: web.Application, settings: PersisterSettings) -> BatchHandler:
    return partial(persist_batch, store=MessageStore(app[MONGO]), events=EventStore(app[MONGO]))


SERVICE = Service(
    name="persister",
    settings=PersisterSettings,
    resources=(MONGO, PRODUCER),
    collections=COLLECTIONS,
    consumers=(
        Consumer(topics=(MESSAGES_EVENTS,), codec=Codec(*MESSAGE_EVENTS), handler=_handler),
    ),
)

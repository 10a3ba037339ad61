"""Declares group_service (libs/service.py): no I/O until the app starts.

Consumes groups.commands.v1 (its commands, keyed by group_id or blocker_id) and
users.events.v1 (UserDeleted), emits groups.events.v1. Before any batch is
handled, and every `projection_check_interval_s`, the Redis projection's
sentinel is checked and the projection rebuilt from MongoDB if it is missing.
In this process batches and rebuilds exclude each other (a lock); across
instances one rebuilds at a time (a Redis lock) and writers WATCH the sentinel,
so a rebuild never overwrites a newer write (see GroupRepository._project).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from group_service.handlers import GroupHandlers, ignore_event
from group_service.repository import COLLECTIONS, GroupRepository
from group_service.settings import GroupServiceSettings
from libs.bus.consumer import BatchHandler, Delivery
from libs.bus.dispatch import dispatch_each
from libs.bus.outbox import Outbox
from libs.contracts.envelope import Codec
from libs.contracts.groups import GROUP_COMMANDS
from libs.contracts.keys import RedisKeys
from libs.contracts.topics import GROUPS_COMMANDS, USERS_EVENTS
from libs.contracts.users import USER_EVENTS, UserDeleted
from libs.lifecycle import MONGO, PRODUCER, REDIS, repeating
from libs.service import Consumer, Service

REPOSITORY = web.AppKey("repository", GroupRepository)
PROJECTION_LOCK = web.AppKey("projection_lock", asyncio.Lock)


async def ensure_projection(app: web.Application) -> None:
    """Rebuild the projection if its sentinel is missing (call with the lock held)."""
    repo = app[REPOSITORY]
    if not await repo.projection_ready():
        await repo.rebuild_projection()


async def _storage(app: web.Application, settings: GroupServiceSettings) -> AsyncIterator[None]:
    """The repository with a complete projection, and the job that repairs it when its
    sentinel goes missing."""
    app[REPOSITORY] = GroupRepository(app[MONGO], app[REDIS], RedisKeys(settings.namespace))
    app[PROJECTION_LOCK] = asyncio.Lock()
    async with app[PROJECTION_LOCK]:
        await ensure_projection(app)

    async def repair() -> None:
        if not await app[REPOSITORY].projection_ready():
            async with app[PROJECTION_LOCK]:
                await ensure_projection(app)

    async with repeating(
        app, "group-projection-watch", settings.projection_check_interval_s, repair
    ):
        yield


def _handler(app: web.Application, settings: GroupServiceSettings) -> BatchHandler:
    """The commands' and user events' handlers, each batch run on a complete projection
    (handlers read their state there)."""
    table = GroupHandlers(app[REPOSITORY], max_group_size=settings.max_group_size).table()
    for event_type in USER_EVENTS:
        if event_type is not UserDeleted:
            table[event_type] = ignore_event
    inner = dispatch_each(table)

    async def handle(deliveries: Sequence[Delivery], outbox: Outbox) -> None:
        async with app[PROJECTION_LOCK]:
            await ensure_projection(app)
            await inner(deliveries, outbox)

    return handle


SERVICE = Service(
    name="group_service",
    settings=GroupServiceSettings,
    resources=(REDIS, MONGO, PRODUCER),
    collections=COLLECTIONS,
    contexts=(_storage,),
    consumers=(
        Consumer(
            topics=(GROUPS_COMMANDS, USERS_EVENTS),
            codec=Codec(*GROUP_COMMANDS, *USER_EVENTS),
            handler=_handler,
            ready_when_assigned=True,
        ),
    ),
)

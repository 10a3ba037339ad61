"""Builds group_service from settings (no I/O until the app starts).

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
import contextlib
from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from group_service.handlers import GroupHandlers, ignore_event
from group_service.repository import GroupRepository
from group_service.settings import GroupServiceSettings
from libs.bus.consumer import BatchHandler, ConsumerLoop, Delivery
from libs.bus.dispatch import dispatch_each
from libs.bus.outbox import Outbox
from libs.contracts.envelope import Codec
from libs.contracts.groups import GROUP_COMMANDS
from libs.contracts.keys import RedisKeys
from libs.contracts.topics import GROUPS_COMMANDS, USERS_EVENTS
from libs.contracts.users import USER_EVENTS, UserDeleted
from libs.lifecycle import (
    MONGO,
    PRODUCER,
    REDIS,
    add_readiness_check,
    consumer_context,
    create_base_app,
    mongo_context,
    producer_context,
    redis_context,
)
from libs.logging import get_logger

log = get_logger(__name__)

REPOSITORY = web.AppKey("repository", GroupRepository)
PROJECTION_LOCK = web.AppKey("projection_lock", asyncio.Lock)


def create_app(settings: GroupServiceSettings) -> web.Application:
    app = create_base_app("group_service")
    app[PROJECTION_LOCK] = asyncio.Lock()
    app.cleanup_ctx.append(redis_context(REDIS, settings.redis_url))
    app.cleanup_ctx.append(mongo_context(MONGO, settings))
    app.cleanup_ctx.append(producer_context(PRODUCER, settings))
    app.cleanup_ctx.append(_storage(settings))
    app.cleanup_ctx.append(_projection_watch(settings))
    app.cleanup_ctx.append(consumer_context(lambda a: _consumer(a, settings)))
    return app


async def ensure_projection(app: web.Application) -> None:
    """Rebuild the projection if its sentinel is missing (call with the lock held)."""
    repo = app[REPOSITORY]
    if not await repo.projection_ready():
        await repo.rebuild_projection()


def _storage(settings: GroupServiceSettings):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        repo = GroupRepository(app[MONGO], app[REDIS], RedisKeys(settings.namespace))
        await repo.bootstrap()
        app[REPOSITORY] = repo
        async with app[PROJECTION_LOCK]:
            await ensure_projection(app)
        yield

    return ctx


def _projection_watch(settings: GroupServiceSettings):  # type: ignore[no-untyped-def]
    """A background task that repairs the projection when its sentinel goes missing."""

    async def watch(app: web.Application) -> None:
        while True:
            await asyncio.sleep(settings.projection_check_interval_s)
            try:
                if not await app[REPOSITORY].projection_ready():
                    async with app[PROJECTION_LOCK]:
                        await ensure_projection(app)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("projection check failed", error=f"{type(exc).__name__}: {exc}")

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(watch(app), name="group_projection_watch")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return ctx


def _guarded(app: web.Application, inner: BatchHandler) -> BatchHandler:
    """Handle a batch only on a complete projection (handlers read their state there)."""

    async def handle(deliveries: Sequence[Delivery], outbox: Outbox) -> None:
        async with app[PROJECTION_LOCK]:
            await ensure_projection(app)
            await inner(deliveries, outbox)

    return handle


def _consumer(app: web.Application, settings: GroupServiceSettings) -> ConsumerLoop:
    handlers = GroupHandlers(app[REPOSITORY], max_group_size=settings.max_group_size)
    table = handlers.table()
    for event_type in USER_EVENTS:
        if event_type is not UserDeleted:
            table[event_type] = ignore_event
    loop = ConsumerLoop(
        group=settings.consumer_group("group_service"),
        topics=[GROUPS_COMMANDS, USERS_EVENTS],
        codec=Codec(*GROUP_COMMANDS, *USER_EVENTS),
        handler=_guarded(app, dispatch_each(table)),
        producer=app[PRODUCER],
        bootstrap=settings.kafka_bootstrap_servers,
        namespace=settings.namespace,
        max_batch=settings.batch_max_records,
    )

    async def assigned() -> bool:
        # Ready once this member holds partitions: earlier, requests would wait out
        # the group's rebalance.
        return loop.assigned_once.is_set()

    add_readiness_check(app, "partitions_assigned", assigned)
    return loop

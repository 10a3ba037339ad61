"""Builds user_service from settings (no I/O until the app starts).

Resources open in order (Redis, MongoDB shards with their collections, the
producer, the users projection keeper) and the consumer of users.commands.v1
is registered last, so on SIGTERM it stops first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from functools import partial

from aiohttp import web

from libs.bus.consumer import ConsumerLoop
from libs.bus.dispatch import dispatch_each
from libs.contracts.envelope import Codec
from libs.contracts.keys import RedisKeys
from libs.contracts.topics import USERS_COMMANDS
from libs.contracts.users import (
    USER_COMMANDS,
    DeleteUser,
    Login,
    Logout,
    LogoutEverywhere,
    RegisterUser,
    UpdateProfile,
)
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
from libs.storage.mongo import bootstrap_collections
from user_service import handlers
from user_service.handlers import Accounts
from user_service.passwords import Passwords
from user_service.repository import COLLECTIONS, UserRepository
from user_service.settings import UserServiceSettings

log = get_logger(__name__)

REPOSITORY = web.AppKey("repository", UserRepository)


def create_app(settings: UserServiceSettings) -> web.Application:
    app = create_base_app("user_service")
    app.cleanup_ctx.append(redis_context(REDIS, settings.redis_url))
    app.cleanup_ctx.append(mongo_context(MONGO, settings))
    app.cleanup_ctx.append(_storage(settings))
    app.cleanup_ctx.append(producer_context(PRODUCER, settings))
    app.cleanup_ctx.append(consumer_context(_consumer(settings), "users_commands"))
    return app


def _storage(
    settings: UserServiceSettings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Collections and indexes, the repository, and the task that keeps the projection."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        await bootstrap_collections(app[MONGO], COLLECTIONS)
        repository = UserRepository(app[MONGO], app[REDIS], RedisKeys(settings.namespace))
        app[REPOSITORY] = repository
        add_readiness_check(app, "users_projection", repository.projection_ready)
        keeper = asyncio.create_task(
            _keep_projection(repository, settings.projection_check_interval_s),
            name="users-projection",
        )
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    return ctx


async def _keep_projection(repository: UserRepository, interval_s: float) -> None:
    """Rebuild the users projection whenever its sentinel is missing (e.g. after a flush)."""
    while True:
        try:
            if not await repository.projection_ready():
                seen = await repository.rebuild_projection()
                if seen is not None:
                    log.info("users projection rebuilt", users=seen)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep trying; readiness shows it
            log.warning("users projection rebuild failed", error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(interval_s)


def _consumer(settings: UserServiceSettings) -> Callable[[web.Application], ConsumerLoop]:
    def build(app: web.Application) -> ConsumerLoop:
        accounts = Accounts(
            repository=app[REPOSITORY],
            passwords=Passwords(
                time_cost=settings.argon2_time_cost,
                memory_kib=settings.argon2_memory_kib,
                parallelism=settings.argon2_parallelism,
            ),
            session_idle_s=settings.session_idle_s,
            session_absolute_s=settings.session_absolute_s,
        )
        table = {
            RegisterUser: partial(handlers.handle_register_user, accounts=accounts),
            Login: partial(handlers.handle_login, accounts=accounts),
            Logout: partial(handlers.handle_logout, accounts=accounts),
            LogoutEverywhere: partial(handlers.handle_logout_everywhere, accounts=accounts),
            UpdateProfile: partial(handlers.handle_update_profile, accounts=accounts),
            DeleteUser: partial(handlers.handle_delete_user, accounts=accounts),
        }
        return ConsumerLoop(
            group=settings.consumer_group("user_service"),
            topics=[USERS_COMMANDS],
            codec=Codec(*USER_COMMANDS),
            handler=dispatch_each(table),
            producer=app[PRODUCER],
            bootstrap=settings.kafka_bootstrap_servers,
            namespace=settings.namespace,
            max_batch=settings.batch_max_records,
        )

    return build

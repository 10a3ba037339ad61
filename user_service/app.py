"""Declares user_service (libs/service.py): no I/O until the app starts.

Opens Redis, MongoDB (users and sessions collections) and the producer, then the
repository with the job that keeps the users projection (rebuilt from MongoDB
whenever its sentinel is missing, e.g. after a flush), then the consumer of
users.commands.v1, which on SIGTERM stops first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

from aiohttp import web

from libs.bus.consumer import BatchHandler
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
from libs.lifecycle import MONGO, PRODUCER, REDIS, add_readiness_check, repeating
from libs.logging import get_logger
from libs.service import Consumer, Service
from user_service import handlers
from user_service.handlers import Accounts
from user_service.passwords import Passwords
from user_service.repository import COLLECTIONS, UserRepository
from user_service.settings import UserServiceSettings

log = get_logger(__name__)

REPOSITORY = web.AppKey("repository", UserRepository)


async def _storage(app: web.Application, settings: UserServiceSettings) -> AsyncIterator[None]:
    """The repository, and the job that keeps the users projection."""
    repository = UserRepository(app[MONGO], app[REDIS], RedisKeys(settings.namespace))
    app[REPOSITORY] = repository
    add_readiness_check(app, "users_projection", repository.projection_ready)

    async def keep_projection() -> None:
        if not await repository.projection_ready():
            seen = await repository.rebuild_projection()
            if seen is not None:
                log.info("users projection rebuilt", users=seen)

    async with repeating(
        app, "users-projection", settings.projection_check_interval_s, keep_projection
    ):
        yield


def _handler(app: web.Application, settings: UserServiceSettings) -> BatchHandler:
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
    return dispatch_each(
        {
            RegisterUser: partial(handlers.handle_register_user, accounts=accounts),
            Login: partial(handlers.handle_login, accounts=accounts),
            Logout: partial(handlers.handle_logout, accounts=accounts),
            LogoutEverywhere: partial(handlers.handle_logout_everywhere, accounts=accounts),
            UpdateProfile: partial(handlers.handle_update_profile, accounts=accounts),
            DeleteUser: partial(handlers.handle_delete_user, accounts=accounts),
        }
    )


SERVICE = Service(
    name="user_service",
    settings=UserServiceSettings,
    resources=(REDIS, MONGO, PRODUCER),
    collections=COLLECTIONS,
    contexts=(_storage,),
    consumers=(
        Consumer(
            topics=(USERS_COMMANDS,),
            codec=Codec(*USER_COMMANDS),
            handler=_handler,
            check="users_commands",
        ),
    ),
)

"""One function per account command (users.commands.v1); no Kafka or HTTP here.

Each handler makes its effect durable (MongoDB, then the Redis projection and
sessions), puts its event into the outbox and returns the reply. Every handler
is idempotent: the consumer loop redelivers a batch whose handling failed, and a
redelivered command must give the same answer without a second effect.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from libs.bus.outbox import Outbox
from libs.contracts.topics import USERS_EVENTS
from libs.contracts.users import (
    USERNAME_PATTERN,
    DeleteUser,
    Login,
    Logout,
    LogoutEverywhere,
    ProfileUpdated,
    ProfileUpdatedPayload,
    RegisterUser,
    SessionOpened,
    UpdateProfile,
    UserDeleted,
    UserDeletedPayload,
    UserProfile,
    UserRegistered,
    UserRegisteredPayload,
)
from libs.errors import Conflict, Forbidden, NotFound, Unauthorized
from libs.logging import get_logger
from user_service.passwords import Passwords
from user_service.repository import UserRecord, UserRepository

log = get_logger(__name__)

_USERNAME_RE = re.compile(USERNAME_PATTERN)


@dataclass(frozen=True, slots=True)
class Accounts:
    """What the handlers need, bound once in app.py."""

    repository: UserRepository
    passwords: Passwords
    session_idle_s: int
    session_absolute_s: int


def _bad_credentials() -> Unauthorized:
    # One answer for an unknown name, a deleted account and a wrong password.
    return Unauthorized("wrong username or password", code="invalid_credentials")


def _millis(moment: datetime) -> datetime:
    """`moment` in UTC at MongoDB's precision, so a stored and a fresh value compare equal."""
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _profile(user: UserRecord) -> UserProfile:
    return UserProfile(**user.profile())


async def handle_register_user(
    command: RegisterUser, outbox: Outbox, accounts: Accounts
) -> UserProfile:
    p = command.payload
    username = p.username.lower()
    repo = accounts.repository
    # Hash first: the claim-then-insert window stays short.
    password_hash = await accounts.passwords.hash(p.password)
    await repo.claim_username(username, p.user_id)
    candidate = UserRecord(
        id=p.user_id,
        username=username,
        display_name=p.display_name or username,
        # The gateway's clock at the request: a redelivery computes the same value.
        created_at=_millis(command.occurred_at),
        password_hash=password_hash,
    )
    user = await repo.insert_user(candidate)
    if user.deleted:
        # A stale redelivery of a registration whose account was since deleted.
        await repo.release_username(username, user.id)
        raise Conflict("this account was deleted", code="account_deleted")
    await repo.project(user)
    await repo.cache_password_hash(user.id, user.password_hash)
    outbox.emit(
        USERS_EVENTS,
        user.id,
        UserRegistered.of(
            UserRegisteredPayload(
                user_id=user.id,
                username=user.username,
                display_name=user.display_name,
                created_at=user.created_at,
            ),
            correlation_id=command.correlation_id,
        ),
    )
    log.info("user registered", user_id=user.id)
    return _profile(user)


async def handle_login(command: Login, outbox: Outbox, accounts: Accounts) -> SessionOpened:
    p = command.payload
    repo = accounts.repository
    username = p.username.lower()
    user_id = await repo.user_id_for_login(username) if _USERNAME_RE.match(username) else None
    password_hash = await repo.password_hash(user_id) if user_id else None
    if not await accounts.passwords.verify(password_hash, p.password) or user_id is None:
        raise _bad_credentials()
    if password_hash and accounts.passwords.needs_rehash(password_hash):
        # The cost parameters were raised since this hash was made: upgrade it now,
        # the only time the plain password is at hand.
        upgraded = await repo.update_user(
            user_id, display_name=None, password_hash=await accounts.passwords.hash(p.password)
        )
        if upgraded is not None:
            await repo.cache_password_hash(user_id, upgraded.password_hash)
    session = await repo.open_session(
        user_id, idle_s=accounts.session_idle_s, absolute_s=accounts.session_absolute_s
    )
    # DeleteUser marks the projection deleted before it revokes sessions, so either
    # it sees this session and revokes it, or this check sees the deletion.
    if await repo.is_deleted(user_id):
        await repo.close_session(user_id, session.token_hash)
        raise _bad_credentials()
    return SessionOpened(
        token=session.token,
        user_id=user_id,
        expires_at=datetime.fromtimestamp(session.expires_at, UTC),
    )


async def handle_logout(command: Logout, outbox: Outbox, accounts: Accounts) -> dict[str, str]:
    await accounts.repository.close_session(command.payload.user_id, command.payload.token_hash)
    return {}


async def handle_logout_everywhere(
    command: LogoutEverywhere, outbox: Outbox, accounts: Accounts
) -> dict[str, int]:
    revoked = await accounts.repository.close_sessions(command.payload.user_id)
    return {"revoked": revoked}


async def handle_update_profile(
    command: UpdateProfile, outbox: Outbox, accounts: Accounts
) -> UserProfile:
    p = command.payload
    repo = accounts.repository
    new_hash: str | None = None
    if p.new_password is not None:
        user = await repo.load_user(p.user_id)
        if user is None or user.deleted:
            raise NotFound("the account does not exist", code="user_not_found")
        if user.password_change_id == command.id:
            # A redelivery of this very change, already applied: answered again.
            new_hash = user.password_hash
        elif p.current_password is None or not await accounts.passwords.verify(
            user.password_hash, p.current_password
        ):
            raise Forbidden("the current password is wrong", code="wrong_password")
        else:
            new_hash = await accounts.passwords.hash(p.new_password)
    user = await repo.update_user(
        p.user_id, display_name=p.display_name, password_hash=new_hash, change_id=command.id
    )
    if user is None:
        raise NotFound("the account does not exist", code="user_not_found")
    await repo.project(user)
    if new_hash is not None:
        await repo.cache_password_hash(user.id, user.password_hash)
        revoked = await repo.close_sessions(user.id, keep=p.token_hash)
        log.info("password changed", user_id=user.id, sessions_revoked=revoked)
    if p.display_name is not None:
        outbox.emit(
            USERS_EVENTS,
            user.id,
            ProfileUpdated.of(
                ProfileUpdatedPayload(user_id=user.id, display_name=user.display_name),
                correlation_id=command.correlation_id,
            ),
        )
    return _profile(user)


async def handle_delete_user(
    command: DeleteUser, outbox: Outbox, accounts: Accounts
) -> dict[str, str]:
    p = command.payload
    user_id = p.user_id
    repo = accounts.repository
    existing = await repo.load_user(user_id)
    if existing is None:
        raise NotFound("the account does not exist", code="user_not_found")
    if not existing.deleted and (
        p.current_password is None
        or not await accounts.passwords.verify(existing.password_hash, p.current_password)
    ):
        raise Forbidden("the current password is wrong", code="wrong_password")
    # Already deleted: a redelivery, whose effects below are idempotent and run again.
    user = await repo.mark_deleted(user_id, _millis(command.occurred_at))
    if user is None:
        raise NotFound("the account does not exist", code="user_not_found")
    # Order matters: the tombstone in Redis first (logins in flight check it), then the
    # sessions, and the name is released in MongoDB only once Redis no longer maps it.
    await repo.project(user)
    await repo.forget_password_hash(user_id)
    await repo.close_sessions(user_id)
    await repo.release_username(user.username, user_id)
    outbox.emit(
        USERS_EVENTS,
        user_id,
        UserDeleted.of(
            UserDeletedPayload(user_id=user_id, deleted_at=_millis(command.occurred_at)),
            correlation_id=command.correlation_id,
        ),
    )
    log.info("user deleted", user_id=user_id)
    return {}

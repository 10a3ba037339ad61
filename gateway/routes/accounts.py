"""Gateway endpoints: accounts and sessions (register, log in and out, profile, lookup).

Commands go to users.commands.v1 and are answered by user_service's reply
(request-reply, README.md, Architecture); the key is the user id, or for a login the
lower-cased username (the caller does not know its id yet). Profile reads are
answered from the users projection in Redis (libs.projections). Registration
and login are rate limited per client address and per username
(gateway.ratelimit).
"""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from gateway import ratelimit
from gateway.api import Routes
from gateway.auth import Principal
from gateway.keys import KEYS, REDIS, REQUESTS, SESSION_CACHE
from gateway.settings import GatewaySettings
from libs.contracts.topics import USERS_COMMANDS
from libs.contracts.users import (
    DeleteUser,
    DeleteUserPayload,
    Login,
    LoginPayload,
    Logout,
    LogoutEverywhere,
    LogoutEverywherePayload,
    LogoutPayload,
    RegisterUser,
    RegisterUserPayload,
    SessionOpened,
    UpdateProfile,
    UpdateProfilePayload,
    UserProfile,
)
from libs.errors import NotFound, Unauthorized
from libs.ids import new_id
from libs.projections import user_id_for_username, user_profile

routes = Routes(tag="accounts")

#: Letters (any case: names are unique case-insensitively and stored lower-cased),
#: digits, '_' and '.'.
Username = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_.]{3,32}$",
        description="3-32 letters, digits, '_' or '.'; stored lower-cased, unique ignoring case",
        examples=["ada.lovelace"],
    ),
]
Password = Annotated[str, Field(min_length=8, max_length=128, description="8-128 characters")]
DisplayName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
    Field(description="1-64 characters shown to others"),
]


class Registration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Username
    password: Password
    display_name: DisplayName | None = Field(None, description="defaults to the username")


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=128)


class ProfileChange(BaseModel):
    """A new display name and/or a new password (which needs the current one)."""

    model_config = ConfigDict(extra="forbid")

    display_name: DisplayName | None = None
    current_password: str | None = Field(None, min_length=1, max_length=128)
    new_password: Password | None = None

    @model_validator(mode="after")
    def _check(self) -> ProfileChange:
        if self.display_name is None and self.new_password is None:
            raise ValueError("give display_name and/or new_password")
        if self.new_password is not None and self.current_password is None:
            raise ValueError("changing the password needs current_password")
        return self


class UsernameLookup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64, description="case-insensitive")


class PublicProfile(BaseModel):
    """What anyone may see of a user."""

    id: str
    username: str
    display_name: str


def setup(app: web.Application, settings: GatewaySettings) -> None:
    ratelimit.setup(app, settings.rate_limits)


async def _ask(request: web.Request, key: str, command: Any) -> dict[str, Any]:
    return await request.app[REQUESTS].request(USERS_COMMANDS, key, command)


# -- sessions -----------------------------------------------------------------------------


@routes.post(
    "/v1/users",
    body=Registration,
    response=UserProfile,
    status=201,
    auth=False,
    summary="Register an account",
    errors=(409, 429),
)
async def register(request: web.Request, body: Registration) -> UserProfile:
    """Creates an account. 409 when the username is taken (ignoring case)."""
    username = body.username.lower()
    await ratelimit.limit_registration(request, username)
    user_id = new_id()
    command = RegisterUser.of(
        RegisterUserPayload(
            user_id=user_id,
            username=username,
            password=body.password,
            display_name=body.display_name,
            client_ip=request.remote,
        )
    )
    return UserProfile.model_validate(await _ask(request, user_id, command))


@routes.post(
    "/v1/sessions",
    body=Credentials,
    response=SessionOpened,
    status=201,
    auth=False,
    summary="Log in",
    errors=(401, 429),
)
async def login(request: web.Request, body: Credentials) -> SessionOpened:
    """Opens a session and returns its bearer token (shown only here).

    A wrong username and a wrong password get the same 401.
    """
    username = body.username.lower()
    await ratelimit.limit_login(request, username)
    command = Login.of(
        LoginPayload(username=username, password=body.password, client_ip=request.remote)
    )
    try:
        opened = await _ask(request, username, command)
    except Unauthorized:
        await ratelimit.record_login_failure(request, username)
        raise
    return SessionOpened.model_validate(opened)


@routes.delete("/v1/sessions/current", status=204, summary="Log out")
async def logout(request: web.Request, principal: Principal) -> None:
    """Revokes the session whose token authenticates this request."""
    command = Logout.of(LogoutPayload(user_id=principal.user_id, token_hash=principal.token_hash))
    await _ask(request, principal.user_id, command)
    request.app[SESSION_CACHE].forget(principal.token_hash)


@routes.delete("/v1/sessions", status=204, summary="Log out everywhere")
async def logout_everywhere(request: web.Request, principal: Principal) -> None:
    """Revokes every session of the caller, this one included."""
    command = LogoutEverywhere.of(LogoutEverywherePayload(user_id=principal.user_id))
    await _ask(request, principal.user_id, command)
    request.app[SESSION_CACHE].forget_user(principal.user_id)


# -- the caller's account -----------------------------------------------------------------


@routes.get("/v1/users/me", response=UserProfile, summary="My account", errors=(404,))
async def get_me(request: web.Request, principal: Principal) -> UserProfile:
    profile = await user_profile(request.app[REDIS], request.app[KEYS], principal.user_id)
    if profile is None:
        raise NotFound("the account does not exist", code="user_not_found")
    return UserProfile.model_validate({f: profile.get(f) for f in UserProfile.model_fields})


@routes.patch(
    "/v1/users/me",
    body=ProfileChange,
    response=UserProfile,
    summary="Change my display name or password",
    errors=(403, 404),
)
async def update_me(request: web.Request, principal: Principal, body: ProfileChange) -> UserProfile:
    """A password change needs the current password (403 when wrong) and revokes every
    other session of the caller; this one stays valid."""
    command = UpdateProfile.of(
        UpdateProfilePayload(
            user_id=principal.user_id,
            display_name=body.display_name,
            current_password=body.current_password,
            new_password=body.new_password,
            token_hash=principal.token_hash,
        )
    )
    profile = UserProfile.model_validate(await _ask(request, principal.user_id, command))
    if body.new_password is not None:
        request.app[SESSION_CACHE].forget_user(principal.user_id, keep=principal.token_hash)
    return profile


class AccountDeletion(BaseModel):
    """Deleting an account needs its password again."""

    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(min_length=1, max_length=128)


@routes.delete(
    "/v1/users/me",
    body=AccountDeletion,
    status=204,
    summary="Delete my account",
    errors=(403, 404, 422),
)
async def delete_me(request: web.Request, principal: Principal, body: AccountDeletion) -> None:
    """Deletes the account once `current_password` is confirmed (403 when wrong): every
    session is revoked, the profile disappears (404 to others), the username is
    released, and other services are told (UserDeleted)."""
    payload = DeleteUserPayload(user_id=principal.user_id, current_password=body.current_password)
    await _ask(request, principal.user_id, DeleteUser.of(payload))
    request.app[SESSION_CACHE].forget_user(principal.user_id)


# -- other users ---------------------------------------------------------------------------


@routes.get(
    "/v1/users",
    query=UsernameLookup,
    response=PublicProfile,
    summary="Look a user up by username",
    errors=(404,),
)
async def lookup(
    request: web.Request, principal: Principal, query: UsernameLookup
) -> PublicProfile:
    redis, keys = request.app[REDIS], request.app[KEYS]
    user_id = await user_id_for_username(redis, keys, query.username)
    profile = await user_profile(redis, keys, user_id) if user_id else None
    if profile is None:
        raise NotFound("no such user", code="user_not_found")
    return PublicProfile.model_validate(profile)


@routes.get(
    "/v1/users/{user_id}", response=PublicProfile, summary="A user's profile", errors=(404,)
)
async def get_user(request: web.Request, principal: Principal) -> PublicProfile:
    user_id = request.match_info["user_id"]
    profile = None
    if 0 < len(user_id) <= 64:
        profile = await user_profile(request.app[REDIS], request.app[KEYS], user_id)
    if profile is None:
        raise NotFound("no such user", code="user_not_found")
    return PublicProfile.model_validate(profile)

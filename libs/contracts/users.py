"""Account commands and events (README.md, Architecture: users.commands.v1, users.events.v1).

Commands: producer gateway, consumer user_service, key user_id (Login: the
lower-cased username, since the caller does not know the id yet).
Events: producer user_service, consumers group_service, message_service,
delivery_service, key user_id.

Passwords cross Kafka inside RegisterUser/Login/UpdateProfile; users.commands.v1
is therefore created with a short retention (libs.bootstrap) and must run over
TLS outside a single machine.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from libs.contracts.envelope import Envelope, Payload

USERNAME_PATTERN = r"^[a-z0-9_.]{3,32}$"


# -- commands ----------------------------------------------------------------------


class RegisterUserPayload(Payload):
    user_id: str
    username: str = Field(pattern=USERNAME_PATTERN)
    password: str = Field(min_length=8, max_length=128)
    display_name: str | None = Field(None, max_length=64)
    client_ip: str | None = None


class RegisterUser(Envelope):
    """Create an account. Reply: the profile {id, username, display_name, created_at}."""

    type: Literal["RegisterUser"] = "RegisterUser"
    payload: RegisterUserPayload


class LoginPayload(Payload):
    username: str = Field(max_length=64)
    password: str = Field(max_length=128)
    client_ip: str | None = None


class Login(Envelope):
    """Open a session. Reply: {token, user_id, expires_at}. Key: lower-cased username."""

    type: Literal["Login"] = "Login"
    payload: LoginPayload


class LogoutPayload(Payload):
    user_id: str
    token_hash: str


class Logout(Envelope):
    """Revoke one session. Reply: {}."""

    type: Literal["Logout"] = "Logout"
    payload: LogoutPayload


class LogoutEverywherePayload(Payload):
    user_id: str


class LogoutEverywhere(Envelope):
    """Revoke every session of a user. Reply: {}."""

    type: Literal["LogoutEverywhere"] = "LogoutEverywhere"
    payload: LogoutEverywherePayload


class UpdateProfilePayload(Payload):
    user_id: str
    display_name: str | None = Field(None, max_length=64)
    current_password: str | None = Field(None, max_length=128)
    new_password: str | None = Field(None, min_length=8, max_length=128)
    #: The caller's own session, kept when a password change revokes the others.
    token_hash: str | None = None


class UpdateProfile(Envelope):
    """Change display name and/or password. Reply: the profile."""

    type: Literal["UpdateProfile"] = "UpdateProfile"
    payload: UpdateProfilePayload


class DeleteUserPayload(Payload):
    user_id: str
    #: Re-authentication: the account is deleted only when this is its password.
    current_password: str | None = Field(None, max_length=128)


class DeleteUser(Envelope):
    """Delete an account: sessions revoked, profile tombstoned, UserDeleted emitted."""

    type: Literal["DeleteUser"] = "DeleteUser"
    payload: DeleteUserPayload


# -- events ------------------------------------------------------------------------


class UserRegisteredPayload(Payload):
    user_id: str
    username: str
    display_name: str
    created_at: datetime


class UserRegistered(Envelope):
    type: Literal["UserRegistered"] = "UserRegistered"
    payload: UserRegisteredPayload


class ProfileUpdatedPayload(Payload):
    user_id: str
    display_name: str


class ProfileUpdated(Envelope):
    type: Literal["ProfileUpdated"] = "ProfileUpdated"
    payload: ProfileUpdatedPayload


class UserDeletedPayload(Payload):
    user_id: str
    deleted_at: datetime


class UserDeleted(Envelope):
    type: Literal["UserDeleted"] = "UserDeleted"
    payload: UserDeletedPayload


# -- replies (the `result` of a Reply to the commands above) ----------------------------


class UserProfile(Payload):
    """Reply to RegisterUser and UpdateProfile: the account as its owner sees it."""

    id: str
    username: str
    display_name: str
    created_at: datetime


class SessionOpened(Payload):
    """Reply to Login. `token` is shown once; only its SHA-256 is stored."""

    token: str
    user_id: str
    expires_at: datetime


USER_COMMANDS = (RegisterUser, Login, Logout, LogoutEverywhere, UpdateProfile, DeleteUser)
USER_EVENTS = (UserRegistered, ProfileUpdated, UserDeleted)

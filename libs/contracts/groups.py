"""Group and block commands and events (groups.commands.v1, groups.events.v1).

Commands: producer gateway, consumer group_service; key group_id, or blocker_id
for BlockUser/UnblockUser. Events: producer group_service, consumers
message_service, delivery_service; same keys.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from libs.contracts.envelope import Envelope, Payload

Role = Literal["owner", "admin", "member"]
GROUP_NAME_MAX = 100
#: Default of group_service's max_group_size setting (members, owner included).
GROUP_SIZE_DEFAULT = 10_000


# -- commands ----------------------------------------------------------------------


class CreateGroupPayload(Payload):
    group_id: str
    owner_id: str
    name: str = Field(min_length=1, max_length=GROUP_NAME_MAX)
    member_ids: tuple[str, ...] = ()


class CreateGroup(Envelope):
    """Create a group; the creator is its owner. Reply: the group with members."""

    type: Literal["CreateGroup"] = "CreateGroup"
    payload: CreateGroupPayload


class RenameGroupPayload(Payload):
    group_id: str
    actor_id: str
    name: str = Field(min_length=1, max_length=GROUP_NAME_MAX)


class RenameGroup(Envelope):
    type: Literal["RenameGroup"] = "RenameGroup"
    payload: RenameGroupPayload


class DeleteGroupPayload(Payload):
    group_id: str
    actor_id: str


class DeleteGroup(Envelope):
    type: Literal["DeleteGroup"] = "DeleteGroup"
    payload: DeleteGroupPayload


class AddMemberPayload(Payload):
    group_id: str
    actor_id: str
    user_id: str


class AddMember(Envelope):
    type: Literal["AddMember"] = "AddMember"
    payload: AddMemberPayload


class RemoveMemberPayload(Payload):
    group_id: str
    actor_id: str
    user_id: str


class RemoveMember(Envelope):
    """Remove a member, or leave when actor_id == user_id."""

    type: Literal["RemoveMember"] = "RemoveMember"
    payload: RemoveMemberPayload


class ChangeRolePayload(Payload):
    group_id: str
    actor_id: str
    user_id: str
    role: Literal["admin", "member"]


class ChangeRole(Envelope):
    type: Literal["ChangeRole"] = "ChangeRole"
    payload: ChangeRolePayload


class RemoveDeletedUserPayload(Payload):
    group_id: str
    user_id: str


class RemoveDeletedUser(Envelope):
    """A deleted account leaves one group (ownership handed over like a leave).

    Producer: group_service itself, on UserDeleted (one per group of the user), so
    that every change of a group is ordered through its group_id partition. No reply.
    """

    type: Literal["RemoveDeletedUser"] = "RemoveDeletedUser"
    payload: RemoveDeletedUserPayload


class BlockPayload(Payload):
    blocker_id: str
    blocked_id: str


class BlockUser(Envelope):
    type: Literal["BlockUser"] = "BlockUser"
    payload: BlockPayload


class UnblockUser(Envelope):
    type: Literal["UnblockUser"] = "UnblockUser"
    payload: BlockPayload


# -- events ------------------------------------------------------------------------


class GroupMember(Payload):
    user_id: str
    role: Role


class GroupCreatedPayload(Payload):
    group_id: str
    name: str
    owner_id: str
    members: tuple[GroupMember, ...]


class GroupCreated(Envelope):
    type: Literal["GroupCreated"] = "GroupCreated"
    payload: GroupCreatedPayload


class GroupRenamedPayload(Payload):
    group_id: str
    name: str
    actor_id: str


class GroupRenamed(Envelope):
    type: Literal["GroupRenamed"] = "GroupRenamed"
    payload: GroupRenamedPayload


class GroupDeletedPayload(Payload):
    group_id: str
    member_ids: tuple[str, ...]


class GroupDeleted(Envelope):
    type: Literal["GroupDeleted"] = "GroupDeleted"
    payload: GroupDeletedPayload


class MemberAddedPayload(Payload):
    group_id: str
    user_id: str
    role: Role
    actor_id: str


class MemberAdded(Envelope):
    type: Literal["MemberAdded"] = "MemberAdded"
    payload: MemberAddedPayload


class MemberRemovedPayload(Payload):
    group_id: str
    user_id: str
    reason: Literal["removed", "left", "account_deleted"]
    actor_id: str


class MemberRemoved(Envelope):
    type: Literal["MemberRemoved"] = "MemberRemoved"
    payload: MemberRemovedPayload


class RoleChangedPayload(Payload):
    group_id: str
    user_id: str
    role: Role
    actor_id: str


class RoleChanged(Envelope):
    """Also emitted for an ownership hand-over (role: owner)."""

    type: Literal["RoleChanged"] = "RoleChanged"
    payload: RoleChangedPayload


class UserBlocked(Envelope):
    type: Literal["UserBlocked"] = "UserBlocked"
    payload: BlockPayload


class UserUnblocked(Envelope):
    type: Literal["UserUnblocked"] = "UserUnblocked"
    payload: BlockPayload


GROUP_COMMANDS = (
    CreateGroup,
    RenameGroup,
    DeleteGroup,
    AddMember,
    RemoveMember,
    ChangeRole,
    BlockUser,
    UnblockUser,
    RemoveDeletedUser,
)
GROUP_EVENTS = (
    GroupCreated,
    GroupRenamed,
    GroupDeleted,
    MemberAdded,
    MemberRemoved,
    RoleChanged,
    UserBlocked,
    UserUnblocked,
)


# -- reply bodies (group_service -> gateway) -----------------------------------------


class MemberView(BaseModel):
    """One member of a group as clients see it."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    role: Role
    joined_at: datetime


class GroupView(BaseModel):
    """A group with its members (oldest first), as clients see it."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    owner_id: str
    created_at: datetime
    members: tuple[MemberView, ...]

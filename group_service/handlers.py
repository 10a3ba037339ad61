"""group_service handlers: one function per command or event (no Kafka or HTTP here).

Commands arrive keyed by group_id (blocks: by blocker_id), so every change of one
group is handled in order by one consumer. A handler checks the rules on the
group's current state (from the projection), makes the change durable through
the repository (MongoDB, then the Redis projection), puts its events in the
outbox and returns the reply body; rule violations raise DomainErrors (4xx).

Rules (issue 4): the owner or an admin renames and adds; the owner or an admin
removes a member (an admin only plain members); anyone leaves; only the owner
changes roles and deletes. An owner who leaves hands ownership to the
longest-standing admin, else member; a group left empty is deleted. A non-member
is told the group does not exist. Timestamps come from the command envelope, so a
redelivered command writes the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from group_service.repository import GroupRepository, GroupState, Member
from libs.bus.outbox import Outbox
from libs.contracts.envelope import Envelope
from libs.contracts.groups import (
    GROUP_NAME_MAX,
    AddMember,
    AddMemberPayload,
    BlockPayload,
    BlockUser,
    ChangeRole,
    CreateGroup,
    DeleteGroup,
    GroupCreated,
    GroupCreatedPayload,
    GroupDeleted,
    GroupDeletedPayload,
    GroupMember,
    GroupRenamed,
    GroupRenamedPayload,
    GroupView,
    MemberAdded,
    MemberAddedPayload,
    MemberRemoved,
    MemberRemovedPayload,
    MemberView,
    RemoveDeletedUser,
    RemoveDeletedUserPayload,
    RemoveMember,
    RenameGroup,
    RoleChanged,
    RoleChangedPayload,
    UnblockUser,
    UserBlocked,
    UserUnblocked,
)
from libs.contracts.topics import GROUPS_COMMANDS, GROUPS_EVENTS
from libs.contracts.users import UserDeleted
from libs.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable

RemovalReason = Literal["removed", "left", "account_deleted"]


# -- pure rules --------------------------------------------------------------------


def group_name(raw: str) -> str:
    """A group name with surrounding whitespace removed; blank or too long is 422."""
    name = " ".join(raw.split())
    if not name:
        raise Invalid("the group name is blank", code="invalid_group_name")
    if len(name) > GROUP_NAME_MAX:
        raise Invalid(
            f"the group name is longer than {GROUP_NAME_MAX} characters", code="invalid_group_name"
        )
    return name


def visible_group(group: GroupState | None, actor_id: str) -> GroupState:
    """The group if `actor_id` is a member; otherwise it "does not exist" for them."""
    if group is None or actor_id not in group.members:
        raise NotFound("no such group", code="group_not_found")
    return group


def require_role(group: GroupState, actor_id: str, allowed: set[str], action: str) -> None:
    if group.members[actor_id].role not in allowed:
        roles = " or ".join(sorted(allowed))
        raise Forbidden(f"only the group's {roles} may {action}", code="not_allowed")


def successor(group: GroupState, leaving_id: str) -> str | None:
    """Who owns the group after `leaving_id` (its owner) leaves: the longest-standing
    admin, else the longest-standing member, else nobody (the group is deleted)."""
    for role in ("admin", "member"):
        candidates = [
            (member.joined_at, user_id)
            for user_id, member in group.members.items()
            if user_id != leaving_id and member.role == role
        ]
        if candidates:
            return min(candidates)[1]
    return None


def check_removal(group: GroupState, actor_id: str, user_id: str) -> RemovalReason:
    """Whether `actor_id` may remove `user_id`, and what the removal is."""
    if user_id not in group.members:
        raise NotFound("the user is not a member of this group", code="member_not_found")
    if actor_id == user_id:
        return "left"
    actor_role = group.members[actor_id].role
    target_role = group.members[user_id].role
    if actor_role == "owner":
        return "removed"
    if actor_role == "admin" and target_role == "member":
        return "removed"
    raise Forbidden("only the owner removes admins; admins remove members", code="not_allowed")


def stored_time(command: Envelope) -> datetime:
    """The command's time at MongoDB's precision (milliseconds), so that what is
    answered now and what a rebuild reads back are the same instant."""
    at = command.occurred_at
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def member_view(user_id: str, member: Member) -> MemberView:
    return MemberView(user_id=user_id, role=member.role, joined_at=member.joined_at)


def _unique(ids: Sequence[str], exclude: str) -> list[str]:
    seen: dict[str, None] = {}
    for user_id in ids:
        if user_id != exclude:
            seen.setdefault(user_id, None)
    return list(seen)


# -- group commands ------------------------------------------------------------------


class GroupHandlers:
    """The handlers, bound to their repository and limits (wired in app.py)."""

    def __init__(self, repo: GroupRepository, *, max_group_size: int) -> None:
        self.repo = repo
        self.max_group_size = max_group_size

    def table(self) -> dict[type[Envelope], Callable[[Any, Outbox], Any]]:
        return {
            CreateGroup: self.handle_create_group,
            RenameGroup: self.handle_rename_group,
            DeleteGroup: self.handle_delete_group,
            AddMember: self.handle_add_member,
            RemoveMember: self.handle_remove_member,
            RemoveDeletedUser: self.handle_remove_deleted_user,
            ChangeRole: self.handle_change_role,
            BlockUser: self.handle_block_user,
            UnblockUser: self.handle_unblock_user,
            UserDeleted: self.handle_user_deleted,
        }

    async def handle_create_group(self, command: CreateGroup, outbox: Outbox) -> GroupView:
        p = command.payload
        existing = await self.repo.load_group(p.group_id)
        if existing is not None:
            if existing.owner_id == p.owner_id and p.owner_id in existing.members:
                return existing.view()  # a redelivered CreateGroup
            raise Conflict("a group with this id exists", code="group_exists")
        name = group_name(p.name)
        member_ids = _unique(p.member_ids, exclude=p.owner_id)
        if 1 + len(member_ids) > self.max_group_size:
            raise Conflict(
                f"a group has at most {self.max_group_size} members",
                code="group_full",
                details={"max_group_size": self.max_group_size},
            )
        unknown = await self.repo.unknown_users(member_ids)
        if unknown:
            raise NotFound(
                "some users do not exist", code="user_not_found", details={"user_ids": unknown[:50]}
            )
        blocked = await self.repo.blocked_either_way(p.owner_id, member_ids)
        if blocked:
            raise _cannot_add(blocked)
        at = stored_time(command)
        group = GroupState(p.group_id, name, p.owner_id, at, {p.owner_id: Member("owner", at)})
        group.members.update({user_id: Member("member", at) for user_id in member_ids})
        await self.repo.create_group(group)
        outbox.emit(
            GROUPS_EVENTS,
            group.id,
            GroupCreated.of(
                GroupCreatedPayload(
                    group_id=group.id,
                    name=group.name,
                    owner_id=group.owner_id,
                    members=tuple(
                        GroupMember(user_id=user_id, role=member.role)
                        for user_id, member in group.members.items()
                    ),
                ),
                correlation_id=command.correlation_id,
            ),
        )
        await self._drop_deleted_joiners(group, list(group.members), outbox, command.correlation_id)
        if not group.members:
            raise NotFound("the account was deleted", code="user_not_found")
        return group.view()

    async def handle_rename_group(self, command: RenameGroup, outbox: Outbox) -> GroupView:
        p = command.payload
        group = visible_group(await self.repo.load_group(p.group_id), p.actor_id)
        require_role(group, p.actor_id, {"owner", "admin"}, "rename it")
        name = group_name(p.name)
        if name != group.name:
            await self.repo.rename_group(group.id, name)
            group.name = name
            outbox.emit(
                GROUPS_EVENTS,
                group.id,
                GroupRenamed.of(
                    GroupRenamedPayload(group_id=group.id, name=name, actor_id=p.actor_id),
                    correlation_id=command.correlation_id,
                ),
            )
        # Without members: a big group's list would not fit one Kafka record.
        return group.view().model_copy(update={"members": ()})

    async def handle_delete_group(self, command: DeleteGroup, outbox: Outbox) -> None:
        p = command.payload
        group = visible_group(await self.repo.load_group(p.group_id), p.actor_id)
        require_role(group, p.actor_id, {"owner"}, "delete it")
        await self._delete(group, outbox, command.correlation_id)

    async def handle_add_member(self, command: AddMember, outbox: Outbox) -> MemberView:
        p: AddMemberPayload = command.payload
        group = visible_group(await self.repo.load_group(p.group_id), p.actor_id)
        require_role(group, p.actor_id, {"owner", "admin"}, "add members")
        if p.user_id in group.members:
            return member_view(p.user_id, group.members[p.user_id])
        if await self.repo.unknown_users([p.user_id]):
            raise NotFound("no such user", code="user_not_found")
        if await self.repo.blocked_either_way(p.actor_id, [p.user_id]):
            raise _cannot_add([p.user_id])
        if len(group.members) >= self.max_group_size:
            raise Conflict(
                f"the group is full ({self.max_group_size} members)",
                code="group_full",
                details={"max_group_size": self.max_group_size},
            )
        member = Member("member", stored_time(command))
        await self.repo.add_member(group.id, p.user_id, member)
        outbox.emit(
            GROUPS_EVENTS,
            group.id,
            MemberAdded.of(
                MemberAddedPayload(
                    group_id=group.id, user_id=p.user_id, role="member", actor_id=p.actor_id
                ),
                correlation_id=command.correlation_id,
            ),
        )
        group.members[p.user_id] = member
        await self._drop_deleted_joiners(group, [p.user_id], outbox, command.correlation_id)
        if p.user_id not in group.members:
            raise NotFound("no such user", code="user_not_found")
        return member_view(p.user_id, member)

    async def handle_remove_member(self, command: RemoveMember, outbox: Outbox) -> None:
        p = command.payload
        group = visible_group(await self.repo.load_group(p.group_id), p.actor_id)
        reason = check_removal(group, p.actor_id, p.user_id)
        await self._remove(group, p.user_id, p.actor_id, reason, outbox, command.correlation_id)

    async def handle_remove_deleted_user(self, command: RemoveDeletedUser, outbox: Outbox) -> None:
        p = command.payload
        group = await self.repo.load_group(p.group_id)
        if group is None or p.user_id not in group.members:
            return  # already gone (a redelivery, or the group was deleted meanwhile)
        await self._remove(
            group, p.user_id, p.user_id, "account_deleted", outbox, command.correlation_id
        )

    async def handle_change_role(self, command: ChangeRole, outbox: Outbox) -> MemberView:
        p = command.payload
        group = visible_group(await self.repo.load_group(p.group_id), p.actor_id)
        require_role(group, p.actor_id, {"owner"}, "change roles")
        target = group.members.get(p.user_id)
        if target is None:
            raise NotFound("the user is not a member of this group", code="member_not_found")
        if target.role == "owner":
            raise Conflict(
                "the owner's role cannot be changed; ownership passes when the owner leaves",
                code="owner_role",
            )
        if target.role != p.role:
            await self.repo.set_role(group.id, p.user_id, p.role)
            target = Member(p.role, target.joined_at)
            outbox.emit(
                GROUPS_EVENTS,
                group.id,
                RoleChanged.of(
                    RoleChangedPayload(
                        group_id=group.id, user_id=p.user_id, role=p.role, actor_id=p.actor_id
                    ),
                    correlation_id=command.correlation_id,
                ),
            )
        return member_view(p.user_id, target)

    async def _remove(
        self,
        group: GroupState,
        user_id: str,
        actor_id: str,
        reason: RemovalReason,
        outbox: Outbox,
        correlation_id: str | None,
    ) -> None:
        if user_id == group.owner_id:
            heir = successor(group, user_id)
            if heir is None:
                await self._delete(group, outbox, correlation_id)
                return
            # Hand over first: a crash in between leaves an owned group, never an orphan.
            await self.repo.hand_over(group.id, heir)
            group.owner_id = heir
            group.members[heir] = Member("owner", group.members[heir].joined_at)
            outbox.emit(
                GROUPS_EVENTS,
                group.id,
                RoleChanged.of(
                    RoleChangedPayload(
                        group_id=group.id, user_id=heir, role="owner", actor_id=actor_id
                    ),
                    correlation_id=correlation_id,
                ),
            )
        await self.repo.remove_member(group.id, user_id)
        group.members.pop(user_id, None)
        outbox.emit(
            GROUPS_EVENTS,
            group.id,
            MemberRemoved.of(
                MemberRemovedPayload(
                    group_id=group.id, user_id=user_id, reason=reason, actor_id=actor_id
                ),
                correlation_id=correlation_id,
            ),
        )

    async def _drop_deleted_joiners(
        self,
        group: GroupState,
        user_ids: list[str],
        outbox: Outbox,
        correlation_id: str | None,
    ) -> None:
        """Undo the joins of accounts deleted while they were being added.

        user_service tombstones an account before it emits UserDeleted. A join
        checked before the tombstone but written after the UserDeleted handler read
        the user's groups would outlive the account; checking again after the write
        closes that gap (the write precedes this check, which precedes the tombstone,
        which precedes UserDeleted). Best effort while the users projection is
        rebuilt: UserDeleted still removes the account then.
        """
        try:
            deleted = await self.repo.unknown_users(user_ids)
        except Unavailable:
            return
        for user_id in deleted:
            if user_id in group.members:
                await self._remove(
                    group, user_id, user_id, "account_deleted", outbox, correlation_id
                )

    async def _delete(self, group: GroupState, outbox: Outbox, correlation_id: str | None) -> None:
        await self.repo.delete_group(group)
        group.members.clear()
        outbox.emit(
            GROUPS_EVENTS,
            group.id,
            GroupDeleted.of(
                GroupDeletedPayload(group_id=group.id, member_ids=tuple(group.members)),
                correlation_id=correlation_id,
            ),
        )

    # -- blocks --------------------------------------------------------------------

    async def handle_block_user(self, command: BlockUser, outbox: Outbox) -> None:
        p = command.payload
        if p.blocker_id == p.blocked_id:
            raise Invalid("you cannot block yourself", code="cannot_block_self")
        if await self.repo.unknown_users([p.blocked_id]):
            raise NotFound("no such user", code="user_not_found")
        await self.repo.block(p.blocker_id, p.blocked_id, stored_time(command))
        outbox.emit(
            GROUPS_EVENTS,
            p.blocker_id,
            UserBlocked.of(p, correlation_id=command.correlation_id),
        )

    async def handle_unblock_user(self, command: UnblockUser, outbox: Outbox) -> None:
        p = command.payload
        if p.blocker_id == p.blocked_id:
            raise Invalid("you cannot unblock yourself", code="cannot_block_self")
        if p.blocked_id not in await self.repo.blocked_by(p.blocker_id):
            if await self.repo.unknown_users([p.blocked_id]):
                raise NotFound("no such user", code="user_not_found")
            return  # not blocked: unblocking is idempotent
        await self.repo.unblock(p.blocker_id, [p.blocked_id])
        outbox.emit(
            GROUPS_EVENTS,
            p.blocker_id,
            UserUnblocked.of(p, correlation_id=command.correlation_id),
        )

    # -- users.events.v1 -------------------------------------------------------------

    async def handle_user_deleted(self, event: UserDeleted, outbox: Outbox) -> None:
        """A deleted account leaves its groups and its blocks, both ways, are dropped.

        Each group is left through a RemoveDeletedUser command on the group's own
        partition, so it is ordered with that group's other changes.
        """
        user_id = event.payload.user_id
        for group_id in sorted(await self.repo.groups_of(user_id)):
            outbox.emit(
                GROUPS_COMMANDS,
                group_id,
                RemoveDeletedUser.of(
                    RemoveDeletedUserPayload(group_id=group_id, user_id=user_id),
                    correlation_id=event.id,
                ),
            )
        blocked = sorted(await self.repo.blocked_by(user_id))
        await self.repo.unblock(user_id, blocked)
        for blocked_id in blocked:
            outbox.emit(
                GROUPS_EVENTS,
                user_id,
                UserUnblocked.of(BlockPayload(blocker_id=user_id, blocked_id=blocked_id)),
            )
        for blocker_id in await self.repo.blockers_of(user_id):
            await self.repo.unblock(blocker_id, [user_id])
            outbox.emit(
                GROUPS_EVENTS,
                blocker_id,
                UserUnblocked.of(BlockPayload(blocker_id=blocker_id, blocked_id=user_id)),
            )


async def ignore_event(event: Envelope, outbox: Outbox) -> None:
    """users.events.v1 carries events group_service has no use for."""
    return None


def _cannot_add(user_ids: list[str]) -> Forbidden:
    """Adds never cross a block, either way; which side blocks is not said (the
    blocked side must not learn of it)."""
    return Forbidden(
        "these users cannot be added by you",
        code="cannot_add_user",
        details={"user_ids": sorted(user_ids)[:50]},
    )

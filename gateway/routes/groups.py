"""Gateway endpoints: groups and blocks (issue 4).

Changes are request-reply commands to group_service on groups.commands.v1, keyed
by group_id (blocks: by the blocker's id), answered once the change is durable
and projected. Reads (my groups, one group, my blocks) come from group_service's
Redis projections, which are complete while their sentinel exists (otherwise
503, libs.group_projection); a non-member is told a group does not exist.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from gateway import ratelimit
from gateway.api import Routes
from gateway.auth import Principal
from gateway.keys import KEYS, REDIS, REQUESTS
from libs.contracts.envelope import Envelope
from libs.contracts.groups import (
    GROUP_NAME_MAX,
    GROUP_SIZE_DEFAULT,
    AddMember,
    AddMemberPayload,
    BlockPayload,
    BlockUser,
    ChangeRole,
    ChangeRolePayload,
    CreateGroup,
    CreateGroupPayload,
    DeleteGroup,
    DeleteGroupPayload,
    GroupView,
    MemberView,
    RemoveMember,
    RemoveMemberPayload,
    RenameGroup,
    RenameGroupPayload,
    Role,
    UnblockUser,
)
from libs.contracts.topics import GROUPS_COMMANDS
from libs.errors import Invalid, NotFound
from libs.group_projection import PROJECTION, projection_unavailable
from libs.ids import new_id

routes = Routes(tag="groups")

#: Ids are UUIDs made by the system; anything else cannot name a user or group.
ID_PATTERN = r"^[0-9a-fA-F-]{1,64}$"
UserId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
_ID = re.compile(ID_PATTERN)


# -- bodies and views ------------------------------------------------------------------


class CreateGroupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=GROUP_NAME_MAX)
    member_ids: list[UserId] = Field(default_factory=list, max_length=GROUP_SIZE_DEFAULT)


class RenameGroupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=GROUP_NAME_MAX)


class ChangeRoleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["admin", "member"]


class GroupListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=100)
    #: The `next_cursor` of the previous page.
    cursor: str | None = Field(None, pattern=ID_PATTERN)


class GroupSummary(BaseModel):
    id: str
    name: str
    owner_id: str
    created_at: datetime
    role: Role
    member_count: int


class GroupPage(BaseModel):
    """The caller's groups, oldest first; `next_cursor` is null on the last page."""

    items: list[GroupSummary]
    next_cursor: str | None


class BlockedUser(BaseModel):
    user_id: str


class BlockList(BaseModel):
    items: list[BlockedUser]


# -- helpers ---------------------------------------------------------------------------


def _path_id(request: web.Request, name: str, what: str) -> str:
    value = request.match_info[name]
    if not _ID.fullmatch(value):
        raise NotFound(f"no such {what}", code=f"{what}_not_found")
    return value


async def _ask(request: web.Request, key: str, command: Envelope) -> dict[str, Any]:
    """Send `command` to group_service and wait for its answer (or its DomainError).
    Every group change counts against its actor's limit (429 past it)."""
    payload = command.payload
    actor = getattr(payload, "actor_id", None) or getattr(payload, "owner_id", None)
    actor = actor or getattr(payload, "blocker_id", None)
    if isinstance(actor, str):
        await ratelimit.limit_user(request.app, "group_changes", actor)
    return await request.app[REQUESTS].request(GROUPS_COMMANDS, key, command)


# -- groups ----------------------------------------------------------------------------


@routes.post(
    "/v1/groups",
    body=CreateGroupBody,
    response=GroupView,
    status=201,
    summary="Create a group (the caller is its owner)",
    errors=(404, 409, 429),
)
async def create_group(
    request: web.Request, principal: Principal, body: CreateGroupBody
) -> GroupView:
    """404 if a listed member does not exist; 409 `group_full` past the size limit."""
    group_id = new_id()
    command = CreateGroup.of(
        CreateGroupPayload(
            group_id=group_id,
            owner_id=principal.user_id,
            name=body.name,
            member_ids=tuple(body.member_ids),
        )
    )
    return GroupView.model_validate(await _ask(request, group_id, command))


@routes.get(
    "/v1/groups",
    query=GroupListQuery,
    response=GroupPage,
    summary="List the caller's groups",
)
async def list_groups(
    request: web.Request, principal: Principal, query: GroupListQuery
) -> GroupPage:
    redis, keys = request.app[REDIS], request.app[KEYS]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.projection_ready(PROJECTION))
        pipe.smembers(keys.user_groups(principal.user_id))
        ready, group_ids = await pipe.execute()
    if not ready:
        raise projection_unavailable()
    ordered = sorted(group_ids)  # UUIDv7: creation order
    if query.cursor is not None:
        ordered = [g for g in ordered if g > query.cursor]
    page = ordered[: query.limit]
    async with redis.pipeline(transaction=False) as pipe:
        for group_id in page:
            pipe.hgetall(keys.group(group_id))
            pipe.hget(keys.group_members(group_id), principal.user_id)
            pipe.hlen(keys.group_members(group_id))
        raw = await pipe.execute() if page else []
    items = []
    for index, group_id in enumerate(page):
        group, role, count = raw[3 * index : 3 * index + 3]
        if not group or role is None:
            continue  # removed between the two reads
        items.append(
            GroupSummary(
                id=group_id,
                name=group["name"],
                owner_id=group["owner_id"],
                created_at=datetime.fromisoformat(group["created_at"]),
                role=role,
                member_count=count,
            )
        )
    next_cursor = page[-1] if len(ordered) > query.limit else None
    return GroupPage(items=items, next_cursor=next_cursor)


@routes.get(
    "/v1/groups/{group_id}",
    response=GroupView,
    summary="A group with its members and roles (members only)",
    errors=(404,),
)
async def get_group(request: web.Request, principal: Principal) -> GroupView:
    return await read_group_view(request, principal.user_id, _path_id(request, "group_id", "group"))


async def read_group_view(request: web.Request, viewer_id: str, group_id: str) -> GroupView:
    """A group as `viewer_id` (a member) sees it, from group_service's projection."""
    redis, keys = request.app[REDIS], request.app[KEYS]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.projection_ready(PROJECTION))
        pipe.hgetall(keys.group(group_id))
        pipe.hgetall(keys.group_members(group_id))
        pipe.hgetall(keys.group_joined(group_id))
        ready, group, roles, joined = await pipe.execute()
    if not ready:
        raise projection_unavailable()
    if not group or viewer_id not in roles:
        raise NotFound("no such group", code="group_not_found")
    created_at = datetime.fromisoformat(group["created_at"])
    members = sorted(
        (
            MemberView(
                user_id=user_id,
                role=role,
                joined_at=datetime.fromisoformat(joined[user_id])
                if user_id in joined
                else created_at,
            )
            for user_id, role in roles.items()
        ),
        key=lambda m: (m.joined_at, m.user_id),
    )
    return GroupView(
        id=group_id,
        name=group["name"],
        owner_id=group["owner_id"],
        created_at=created_at,
        members=tuple(members),
    )


@routes.patch(
    "/v1/groups/{group_id}",
    body=RenameGroupBody,
    response=GroupView,
    summary="Rename a group (owner or admin)",
    errors=(403, 404, 429),
)
async def rename_group(
    request: web.Request, principal: Principal, body: RenameGroupBody
) -> GroupView:
    group_id = _path_id(request, "group_id", "group")
    command = RenameGroup.of(
        RenameGroupPayload(group_id=group_id, actor_id=principal.user_id, name=body.name)
    )
    # The reply carries no member list (a big group's would not fit a Kafka record);
    # the projection already holds the change, so the view is read from there.
    await _ask(request, group_id, command)
    return await read_group_view(request, principal.user_id, group_id)


@routes.delete(
    "/v1/groups/{group_id}", status=204, summary="Delete a group (owner)", errors=(403, 404, 429)
)
async def delete_group(request: web.Request, principal: Principal) -> None:
    group_id = _path_id(request, "group_id", "group")
    command = DeleteGroup.of(DeleteGroupPayload(group_id=group_id, actor_id=principal.user_id))
    await _ask(request, group_id, command)


@routes.put(
    "/v1/groups/{group_id}/members/{user_id}",
    response=MemberView,
    summary="Add a member (owner or admin); adding a member again is not an error",
    errors=(403, 404, 409, 429),
)
async def add_member(request: web.Request, principal: Principal) -> MemberView:
    group_id = _path_id(request, "group_id", "group")
    user_id = _path_id(request, "user_id", "user")
    command = AddMember.of(
        AddMemberPayload(group_id=group_id, actor_id=principal.user_id, user_id=user_id)
    )
    return MemberView.model_validate(await _ask(request, group_id, command))


@routes.delete(
    "/v1/groups/{group_id}/members/{user_id}",
    status=204,
    summary="Remove a member (owner or admin), or leave (yourself)",
    description=(
        "An owner who leaves hands ownership to the longest-standing admin, else the "
        "longest-standing member; the last member leaving deletes the group."
    ),
    errors=(403, 404, 429),
)
async def remove_member(request: web.Request, principal: Principal) -> None:
    group_id = _path_id(request, "group_id", "group")
    user_id = _path_id(request, "user_id", "user")
    command = RemoveMember.of(
        RemoveMemberPayload(group_id=group_id, actor_id=principal.user_id, user_id=user_id)
    )
    await _ask(request, group_id, command)


@routes.put(
    "/v1/groups/{group_id}/members/{user_id}/role",
    body=ChangeRoleBody,
    response=MemberView,
    summary="Make a member an admin or a plain member (owner)",
    errors=(403, 404, 409, 429),
)
async def change_role(
    request: web.Request, principal: Principal, body: ChangeRoleBody
) -> MemberView:
    group_id = _path_id(request, "group_id", "group")
    user_id = _path_id(request, "user_id", "user")
    command = ChangeRole.of(
        ChangeRolePayload(
            group_id=group_id, actor_id=principal.user_id, user_id=user_id, role=body.role
        )
    )
    return MemberView.model_validate(await _ask(request, group_id, command))


# -- blocks ----------------------------------------------------------------------------


def _block_target(request: web.Request, principal: Principal) -> str:
    user_id = _path_id(request, "user_id", "user")
    if user_id == principal.user_id:
        raise Invalid("you cannot block yourself", code="cannot_block_self")
    return user_id


@routes.put(
    "/v1/blocks/{user_id}",
    status=204,
    summary="Block a user (one-way, idempotent)",
    description="Their messages to you are rejected from the moment this answers.",
    errors=(404, 422, 429),
)
async def block_user(request: web.Request, principal: Principal) -> None:
    blocked_id = _block_target(request, principal)
    command = BlockUser.of(BlockPayload(blocker_id=principal.user_id, blocked_id=blocked_id))
    await _ask(request, principal.user_id, command)


@routes.delete(
    "/v1/blocks/{user_id}",
    status=204,
    summary="Unblock a user (idempotent)",
    errors=(404, 422, 429),
)
async def unblock_user(request: web.Request, principal: Principal) -> None:
    blocked_id = _block_target(request, principal)
    command = UnblockUser.of(BlockPayload(blocker_id=principal.user_id, blocked_id=blocked_id))
    await _ask(request, principal.user_id, command)


@routes.get("/v1/blocks", response=BlockList, summary="The users the caller blocks")
async def list_blocks(request: web.Request, principal: Principal) -> BlockList:
    redis, keys = request.app[REDIS], request.app[KEYS]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.projection_ready(PROJECTION))
        pipe.smembers(keys.blocks(principal.user_id))
        ready, blocked = await pipe.execute()
    if not ready:
        raise projection_unavailable()
    return BlockList(items=[BlockedUser(user_id=user_id) for user_id in sorted(blocked)])

"""Gateway endpoints: the inbox (issue 16).

- GET /v1/conversations?limit=&cursor=&archived=: the caller's conversations, most
  recent activity first, each with its title, last message, unread count, mute
  and archive flags. Read from the inbox read model (libs/inbox_projection.py,
  kept by delivery_service): one Redis round trip for the page's order, one for
  its entries with their unread counts (O(1) each) and titles.
- PATCH /v1/conversations/users/{user_id} and .../groups/{group_id}
  {muted?, archived?}: per-user settings, durable, answered once applied
  (UpdateConversationSettings to delivery_service); the caller's other devices
  get a `conversation_updated` frame.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.api import Routes
from gateway.auth import Principal
from gateway.history import decode_cursor, encode_cursor
from gateway.keys import KEYS, REDIS, REQUESTS
from gateway.views import render_views
from libs.contracts.conversations import (
    ConversationRef,
    ConversationView,
    UpdateConversationSettings,
    UpdateConversationSettingsPayload,
)
from libs.contracts.messages import MessageView, from_millis
from libs.contracts.topics import CONVERSATIONS_COMMANDS
from libs.errors import Invalid, NotFound
from libs.group_projection import group_members
from libs.inbox_projection import InboxEntry, entries_of, inbox_page
from libs.projections import user_exists

routes = Routes(tag="conversations")

ID_MAX_CHARS = 64


class ConversationsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=100)
    cursor: str | None = Field(None, max_length=512, description="next_cursor of a page")
    archived: bool = Field(False, description="true: the archived conversations only")


class ConversationPage(BaseModel):
    conversations: list[ConversationView]
    #: Pass as `cursor` for the next page; null on the last page.
    next_cursor: str | None


class ConversationSettingsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    muted: bool | None = None
    archived: bool | None = None


async def _views(
    app: web.Application, caller_id: str, entries: Sequence[InboxEntry]
) -> list[ConversationView]:
    views: list[ConversationView] = []
    last_messages: list[MessageView] = []
    for entry in entries:
        last = MessageView.model_validate_json(entry.last_message) if entry.last_message else None
        if last is not None:
            last_messages.append(last)
        views.append(
            ConversationView(
                kind=entry.kind,  # type: ignore[arg-type]
                id=entry.target_id,
                title=entry.title,
                last_message=last,
                unread_count=entry.unread_count,
                last_activity_at=from_millis(entry.last_activity_ms),
                muted=entry.muted,
                archived=entry.archived,
            )
        )
    await render_views(app, caller_id, last_messages)
    return views


def _decode_inbox_cursor(cursor: str) -> tuple[int, str]:
    data = decode_cursor(cursor)
    ms, member = data.get("t"), data.get("m")
    if not isinstance(ms, int) or not isinstance(member, str):
        raise Invalid("the cursor is not valid", code="invalid_cursor")
    return ms, member


@routes.get(
    "/v1/conversations",
    query=ConversationsQuery,
    response=ConversationPage,
    summary="The caller's conversations, most recent activity first",
)
async def list_conversations(
    request: web.Request, principal: Principal, query: ConversationsQuery
) -> ConversationPage:
    """A direct conversation appears for both people at its first message; a group
    when the user joins it. Archived ones are listed only with archived=true; a new
    message un-archives a conversation unless it is muted. `unread_count` counts the
    messages from others after the caller's read watermark."""
    before = _decode_inbox_cursor(query.cursor) if query.cursor else None
    entries, more = await inbox_page(
        request.app[REDIS],
        request.app[KEYS],
        principal.user_id,
        archived=query.archived,
        before=before,
        limit=query.limit,
    )
    views = await _views(request.app, principal.user_id, entries)
    next_cursor = None
    if more and entries:
        last = entries[-1]
        next_cursor = encode_cursor({"t": last.last_activity_ms, "m": last.conversation})
    return ConversationPage(conversations=views, next_cursor=next_cursor)


async def _settings(
    request: web.Request, principal: Principal, body: ConversationSettingsBody, kind: str
) -> ConversationView:
    if body.muted is None and body.archived is None:
        raise Invalid("give muted, archived or both", code="invalid_body")
    app = request.app
    target = request.match_info["user_id" if kind == "user" else "group_id"]
    if len(target) > ID_MAX_CHARS:
        raise NotFound("no such conversation", code="conversation_not_found")
    if kind == "user":
        if target == principal.user_id or not await user_exists(app[REDIS], app[KEYS], target):
            raise NotFound("no such conversation", code="conversation_not_found")
    else:
        members = await group_members(app[REDIS], app[KEYS], target)
        if not members or principal.user_id not in members:
            raise NotFound("no such conversation", code="conversation_not_found")
    command = UpdateConversationSettings.of(
        UpdateConversationSettingsPayload(
            user_id=principal.user_id,
            conversation=ConversationRef(kind=kind, id=target),  # type: ignore[arg-type]
            muted=body.muted,
            archived=body.archived,
        )
    )
    await app[REQUESTS].request(CONVERSATIONS_COMMANDS, principal.user_id, command)
    entries = await entries_of(app[REDIS], app[KEYS], principal.user_id, [f"{kind}:{target}"])
    if not entries:  # left the group meanwhile
        raise NotFound("no such conversation", code="conversation_not_found")
    return (await _views(app, principal.user_id, entries))[0]


@routes.patch(
    "/v1/conversations/users/{user_id}",
    body=ConversationSettingsBody,
    response=ConversationView,
    summary="Mute or archive a direct conversation (for the caller)",
    errors=(404,),
)
async def patch_direct(
    request: web.Request, principal: Principal, body: ConversationSettingsBody
) -> ConversationView:
    return await _settings(request, principal, body, "user")


@routes.patch(
    "/v1/conversations/groups/{group_id}",
    body=ConversationSettingsBody,
    response=ConversationView,
    summary="Mute or archive a group conversation (for the caller)",
    errors=(404,),
)
async def patch_group(
    request: web.Request, principal: Principal, body: ConversationSettingsBody
) -> ConversationView:
    return await _settings(request, principal, body, "group")

"""Gateway endpoints: messages (issue 5): send, history of a conversation, sync.

Sending is gateway.sending (shared with the WebSocket `send` frame); reads are
gateway.history (recent-messages cache first, then MongoDB). A conversation is
visible to its participants only: any other caller is told it does not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.api import Routes
from gateway.auth import Principal
from gateway.history import (
    Bound,
    Conversation,
    cursor_position,
    decode_sync_cursor,
    encode_sync_cursor,
    history_cursor,
    read_history,
    read_sync,
    tighter_lower,
    tighter_upper,
    time_position,
)
from gateway.keys import KEYS, REDIS
from gateway.sending import EntityId, SendMessageBody, send_message
from gateway.status import annotate_status
from gateway.views import render_views
from libs.contracts.conversations import EventView
from libs.contracts.messages import MessageView
from libs.errors import Invalid, NotFound, Unavailable

routes = Routes(tag="messages")

USERS_PROJECTION = "users"
GROUPS_PROJECTION = "groups"


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    with_user: EntityId | None = Field(None, description="The other user of a direct chat")
    group: EntityId | None = Field(None, description="A group the caller is a member of")
    before: str | None = Field(None, max_length=512, description="Cursor: older than this")
    after: str | None = Field(None, max_length=512, description="Cursor: newer than this")
    since: datetime | None = Field(None, description="ISO 8601, inclusive")
    until: datetime | None = Field(None, description="ISO 8601, exclusive")
    limit: int = Field(50, ge=1, le=100)


class HistoryPage(BaseModel):
    messages: list[MessageView]
    #: Pass as `before` (or as `after`, when this page was asked with `after`) for the
    #: next page in the same direction; null when the page is empty.
    next_cursor: str | None
    #: The cursor of the page's other edge: pass as `after` (or as `before`, when this
    #: page was asked with `after`) to page the other way without repeating this page.
    prev_cursor: str | None
    has_more: bool


class SyncQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cursor: str | None = Field(None, max_length=65_536)
    limit: int = Field(100, ge=1, le=500)


class SyncPage(BaseModel):
    """What was logged for the caller (inbox and groups) after `cursor`, oldest first:
    the messages, and the events (edits, deletes, reactions, conversation updates;
    docs/conversations.md). Per receiver, messages and events share one gap-free seq
    sequence: apply both in seq order. Messages are in their current state."""

    messages: list[MessageView]
    events: list[EventView] = Field(default_factory=list)
    cursor: str
    has_more: bool


@routes.post(
    "/v1/messages",
    body=SendMessageBody,
    response=MessageView,
    status=201,
    summary="Send a message to a user or a group",
    errors=(403, 404),
)
async def post_message(
    request: web.Request, principal: Principal, body: SendMessageBody
) -> MessageView:
    """Answers once the message is accepted and durable in Kafka (status "sent"). A
    retry with the same client_msg_id answers the original message (same id, seq).
    `reply_to` names a message of the same conversation (else 422)."""
    return await send_message(request.app, principal, body)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def _conversation(
    request: web.Request, principal: Principal, query: HistoryQuery
) -> Conversation:
    redis, keys = request.app[REDIS], request.app[KEYS]
    if (query.with_user is None) == (query.group is None):
        raise Invalid("give exactly one of with_user and group", code="invalid_conversation")
    if query.with_user is not None:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.exists(keys.projection_ready(USERS_PROJECTION))
            pipe.exists(keys.user_profile(query.with_user))
            ready, exists = await pipe.execute()
        if not ready:
            raise Unavailable("user data is being rebuilt; retry shortly")
        if not exists:
            raise NotFound("no such conversation", code="conversation_not_found")
        return Conversation.direct(principal.user_id, query.with_user)
    assert query.group is not None
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.projection_ready(GROUPS_PROJECTION))
        pipe.hexists(keys.group_members(query.group), principal.user_id)
        ready, member = await pipe.execute()
    if not ready:
        raise Unavailable("group data is being rebuilt; retry shortly")
    if not member:
        raise NotFound("no such conversation", code="conversation_not_found")
    return Conversation.group(query.group)


@routes.get(
    "/v1/messages",
    query=HistoryQuery,
    response=HistoryPage,
    summary="History of a conversation, newest first",
    errors=(404,),
)
async def get_history(
    request: web.Request, principal: Principal, query: HistoryQuery
) -> HistoryPage:
    """A direct conversation (with_user) merges both directions; a group's is its log.
    Pages are stable under concurrent sends: no message skipped or repeated."""
    if query.before is not None and query.after is not None:
        raise Invalid("give at most one of before and after", code="invalid_cursor")
    if query.since and query.until and _aware(query.since) >= _aware(query.until):
        raise Invalid("since must be earlier than until", code="invalid_range")
    conversation = await _conversation(request, principal, query)
    lower = Bound(time_position(_aware(query.since)), True) if query.since else None
    upper = Bound(time_position(_aware(query.until)), False) if query.until else None
    if query.before is not None:
        upper = tighter_upper(upper, Bound(cursor_position(conversation, query.before), False))
    if query.after is not None:
        lower = tighter_lower(lower, Bound(cursor_position(conversation, query.after), False))
    ascending = query.after is not None
    page = await read_history(
        request.app,
        conversation,
        lower=lower,
        upper=upper,
        limit=query.limit,
        ascending=ascending,
    )
    await annotate_status(request.app, principal.user_id, page.messages)
    await render_views(request.app, principal.user_id, page.messages)
    next_cursor = prev_cursor = None
    if page.messages:
        newest, oldest = page.messages[0], page.messages[-1]
        next_edge, prev_edge = (newest, oldest) if ascending else (oldest, newest)
        next_cursor = history_cursor(conversation, next_edge)
        prev_cursor = history_cursor(conversation, prev_edge)
    return HistoryPage(
        messages=page.messages,
        next_cursor=next_cursor,
        prev_cursor=prev_cursor,
        has_more=page.has_more,
    )


@routes.get(
    "/v1/sync",
    query=SyncQuery,
    response=SyncPage,
    summary="Everything addressed to the caller after its cursor",
)
async def get_sync(request: web.Request, principal: Principal, query: SyncQuery) -> SyncPage:
    """Across the caller's inbox and groups, oldest first, by seq per receiver. Call again
    with the returned cursor (until has_more is false): nothing is lost or repeated."""
    seqs = decode_sync_cursor(query.cursor)
    redis, keys = request.app[REDIS], request.app[KEYS]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(keys.projection_ready(GROUPS_PROJECTION))
        pipe.smembers(keys.user_groups(principal.user_id))
        ready, groups = await pipe.execute()
    if not ready:
        raise Unavailable("group data is being rebuilt; retry shortly")
    receivers = [principal.user_id, *sorted(groups)]
    blocked = await redis.smembers(keys.blocks(principal.user_id))
    entries, advanced, more = await read_sync(
        request.app, receivers, seqs, query.limit, hidden_actors=blocked
    )
    messages = [e for e in entries if isinstance(e, MessageView)]
    events = [e for e in entries if isinstance(e, EventView)]
    await annotate_status(request.app, principal.user_id, messages)
    await render_views(request.app, principal.user_id, messages)
    return SyncPage(
        messages=messages, events=events, cursor=encode_sync_cursor(advanced), has_more=more
    )

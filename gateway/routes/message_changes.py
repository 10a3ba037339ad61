"""Gateway endpoints: edit, delete and react to a message (issue 16).

- PATCH /v1/messages/{message_id} {content}: the sender edits, within
  MESSAGE_SERVICE_EDIT_WINDOW_S (48 h) of sending; a deleted message is 409.
- DELETE /v1/messages/{message_id}: delete for everyone (the sender; in a group
  an owner or admin too): a tombstone, the content purged from storage and caches.
- PUT / DELETE /v1/messages/{message_id}/reactions/{emoji}: one reaction of each
  emoji per user; adding it again or removing a missing one is not an error; an
  emoji that is not a single emoji is 422.

Authorization is gateway.message_access (404 for a message the caller may not
see, 403 for an action not allowed); the change itself is a ChangeMessage
command keyed by the message's receiver, answered by message_service once the
change is logged and durable (docs/conversations.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import unquote

import emoji as emoji_lib
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.api import Routes
from gateway.auth import Principal
from gateway.keys import ATTACHMENTS, MONGO, REQUESTS, SETTINGS
from gateway.message_access import Action, authorize
from gateway.views import render_views
from libs.contracts.conversations import ChangeAction, ChangeMessage, ChangeMessagePayload
from libs.contracts.messages import MessageView, from_millis, to_millis
from libs.contracts.topics import MESSAGES_COMMANDS
from libs.errors import Invalid
from libs.ids import new_id
from libs.media.attachments import release_message_attachments
from libs.readmodels.messages import find_message

routes = Routes(tag="messages")

EMOJI_MAX_CHARS = 32


class EditMessageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(description="The new content: 1 to 4,000 characters after trimming")


async def change_message(
    app: web.Application,
    principal: Principal,
    message_id: str,
    action: ChangeAction,
    *,
    content: str | None = None,
    emoji: str | None = None,
) -> MessageView:
    """Authorize, then ask message_service; the message in its new state."""
    needed: Action = "react" if action in ("react", "unreact") else action  # type: ignore[assignment]
    ref = await authorize(app, principal.user_id, message_id, needed)
    payload = ChangeMessagePayload(
        change_id=new_id(),
        actor_id=principal.user_id,
        action=action,
        message_id=ref.id,
        receiver_kind=ref.receiver_kind,
        receiver_id=ref.receiver_id,
        seq=ref.seq,
        content=content,
        emoji=emoji,
        created_at=from_millis(to_millis(datetime.now(UTC))),
    )
    result = await app[REQUESTS].request(
        MESSAGES_COMMANDS, ref.receiver_id, ChangeMessage.of(payload)
    )
    view = MessageView.model_validate(result)
    await render_views(app, principal.user_id, [view])
    return view


def valid_content(app: web.Application, raw: str) -> str:
    content = raw.strip()
    limit = app[SETTINGS].message_max_chars
    if not 1 <= len(content) <= limit:
        raise Invalid(
            f"content must be 1 to {limit} characters after trimming",
            code="invalid_content",
            details={"length": len(content), "max": limit},
        )
    return content


def valid_emoji(raw: str) -> str:
    value = unquote(raw)
    if len(value) > EMOJI_MAX_CHARS or not emoji_lib.is_emoji(value):
        raise Invalid("a reaction is one emoji", code="invalid_emoji")
    return value


@routes.patch(
    "/v1/messages/{message_id}",
    body=EditMessageBody,
    response=MessageView,
    summary="Edit a message the caller sent (within the edit window)",
    errors=(403, 404, 409),
)
async def edit_message(
    request: web.Request, principal: Principal, body: EditMessageBody
) -> MessageView:
    """The answer carries `edited_at`. Every participant's devices get a
    `message_edited` frame (not those who block the editor)."""
    content = valid_content(request.app, body.content)
    return await change_message(
        request.app, principal, request.match_info["message_id"], "edit", content=content
    )


@routes.delete(
    "/v1/messages/{message_id}",
    status=204,
    summary="Delete a message for everyone",
    errors=(403, 404),
)
async def delete_message(request: web.Request, principal: Principal) -> None:
    """The sender may; in a group so may an owner or admin. History and sync show a
    tombstone (`deleted: true`, no content, reactions, attachments or reply preview).
    The message's attachments that no other message references are freed. Deleting a
    deleted message again is not an error."""
    message_id = request.match_info["message_id"]
    await change_message(request.app, principal, message_id, "delete")
    await _release_attachments(request.app, message_id)


async def _release_attachments(app: web.Application, message_id: str) -> None:
    """Once the delete is durable: free what only this message referenced. The ids come
    from the stored message (its document keeps them; views of a tombstone do not); a
    message the persister has not stored yet keeps its references until a delete
    retried later, and its uploads stay readable to its conversation meanwhile."""
    stored = await find_message(app[MONGO], message_id)
    ids = [a["id"] for a in (stored or {}).get("attachments") or [] if "id" in a]
    if ids:
        await release_message_attachments(app[ATTACHMENTS], message_id, ids)


@routes.put(
    "/v1/messages/{message_id}/reactions/{emoji}",
    response=MessageView,
    summary="React to a message with one emoji (URL-encoded)",
    errors=(403, 404, 409, 422),
)
async def add_reaction(request: web.Request, principal: Principal) -> MessageView:
    """One reaction of each emoji per user: adding it again is not an error."""
    emoji = valid_emoji(request.match_info["emoji"])
    return await change_message(
        request.app, principal, request.match_info["message_id"], "react", emoji=emoji
    )


@routes.delete(
    "/v1/messages/{message_id}/reactions/{emoji}",
    response=MessageView,
    summary="Take back a reaction",
    errors=(403, 404, 409, 422),
)
async def remove_reaction(request: web.Request, principal: Principal) -> MessageView:
    """Removing a reaction the caller did not make is not an error."""
    emoji = valid_emoji(request.match_info["emoji"])
    return await change_message(
        request.app, principal, request.match_info["message_id"], "unreact", emoji=emoji
    )

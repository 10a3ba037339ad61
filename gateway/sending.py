"""Sending a message: the one code path behind POST /v1/messages and the WebSocket `send`.

`send_message` validates the input (exactly one receiver, content length after
trimming, the optional sender_id equal to the caller, a reply_to of the same
conversation), makes the time-ordered
message id (UUIDv7), publishes SendMessage to messages.commands.v1 keyed by the
receiver and waits for message_service's reply, which comes once the
MessageAccepted event is durable in Kafka. The answer is the accepted message
(the original one, for a retry with the same client_msg_id).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth import Principal
from gateway.keys import REQUESTS, SETTINGS
from gateway.message_access import locate
from gateway.views import render_views
from libs.contracts.messages import (
    MessageView,
    ReceiverKind,
    ReplyRef,
    SendMessage,
    SendMessagePayload,
    conversation_id,
    from_millis,
    to_millis,
)
from libs.contracts.topics import MESSAGES_COMMANDS
from libs.errors import Forbidden, Invalid
from libs.ids import new_id

EntityId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class SendMessageBody(BaseModel):
    """POST /v1/messages (and the WebSocket `send` frame's fields)."""

    model_config = ConfigDict(extra="forbid")

    to_user_id: EntityId | None = None
    to_group_id: EntityId | None = None
    content: str = Field(description="1 to 4,000 characters after trimming (configurable)")
    client_msg_id: UUID | None = Field(
        None, description="Client-made id: a retry with the same one returns the original"
    )
    sent_at: datetime | None = Field(None, description="Client clock, ISO 8601")
    sender_id: str | None = Field(None, description="If given, must be the caller")
    reply_to: str | None = Field(
        None, max_length=64, description="The id of a message of the same conversation"
    )


def receiver_of(body: SendMessageBody) -> tuple[ReceiverKind, str]:
    if (body.to_user_id is None) == (body.to_group_id is None):
        raise Invalid("give exactly one of to_user_id and to_group_id", code="invalid_receiver")
    if body.to_user_id is not None:
        return "user", body.to_user_id
    assert body.to_group_id is not None
    return "group", body.to_group_id


async def send_message(
    app: web.Application, principal: Principal, body: SendMessageBody
) -> MessageView:
    """Send `body` as `principal`; the accepted message, or a DomainError (4xx/503/504)."""
    if body.sender_id is not None and body.sender_id != principal.user_id:
        raise Forbidden("sender_id must be the authenticated user", code="sender_mismatch")
    kind, receiver_id = receiver_of(body)
    content = body.content.strip()
    limit = app[SETTINGS].message_max_chars
    if not 1 <= len(content) <= limit:
        raise Invalid(
            f"content must be 1 to {limit} characters after trimming",
            code="invalid_content",
            details={"length": len(content), "max": limit},
        )
    reply = await _reply_ref(app, kind, receiver_id, principal.user_id, body.reply_to)
    sent_at = body.sent_at
    if sent_at is not None and sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=UTC)
    payload = SendMessagePayload(
        message_id=new_id(),
        sender_id=principal.user_id,
        receiver_kind=kind,
        receiver_id=receiver_id,
        content=content,
        client_msg_id=str(body.client_msg_id) if body.client_msg_id else None,
        client_sent_at=from_millis(to_millis(sent_at)) if sent_at else None,
        created_at=from_millis(to_millis(datetime.now(UTC))),
        reply_to=reply,
    )
    result = await app[REQUESTS].request(MESSAGES_COMMANDS, receiver_id, SendMessage.of(payload))
    view = MessageView.model_validate(result)
    await render_views(app, principal.user_id, [view])
    return view


async def _reply_ref(
    app: web.Application, kind: ReceiverKind, receiver_id: str, sender_id: str, reply_to: str | None
) -> ReplyRef | None:
    """The message a reply answers: it must be of the same conversation (else 422)."""
    if reply_to is None:
        return None
    original = await locate(app, reply_to)
    if original is None or original.conversation != conversation_id(kind, receiver_id, sender_id):
        raise Invalid(
            "reply_to must be a message of the same conversation", code="invalid_reply_to"
        )
    return ReplyRef(
        id=original.id,
        sender_id=original.sender_id,
        receiver_id=original.receiver_id,
        position=original.position,
    )

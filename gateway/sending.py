"""Sending a message: the one code path behind POST /v1/messages and the WebSocket `send`.

`send_message` validates the input (exactly one receiver, content length after
trimming, the optional sender_id equal to the caller, a reply_to of the same
conversation), makes the time-ordered
message id (UUIDv7), publishes SendMessage to messages.commands.v1 keyed by the
receiver and waits for message_service's reply, which comes once the
MessageAccepted event is durable in Kafka. The answer is the accepted message
(the original one, for a retry with the same client_msg_id).

Attachments (`attachment_ids`, uploads of the sender) are bound to the message
before it is sent and unbound if it is refused (gateway.media).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway import ratelimit
from gateway.auth import Principal
from gateway.keys import REQUESTS, SETTINGS
from gateway.media import bind_to_message, unbind_from_message
from gateway.message_access import locate
from gateway.views import render_views
from libs.contracts.messages import (
    ATTACHMENTS_MAX,
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
from libs.errors import DomainError, Forbidden, Invalid, ReplyTimeout
from libs.ids import new_id

EntityId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


#: Exactly one receiver, in the schema too (so clients and fuzzers see the rule).
_ONE_RECEIVER = [
    {
        "required": ["to_user_id"],
        "properties": {"to_user_id": {"type": "string"}, "to_group_id": {"type": "null"}},
    },
    {
        "required": ["to_group_id"],
        "properties": {"to_group_id": {"type": "string"}, "to_user_id": {"type": "null"}},
    },
]


class SendMessageBody(BaseModel):
    """POST /v1/messages (and the WebSocket `send` frame's fields)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": _ONE_RECEIVER})

    to_user_id: EntityId | None = None
    to_group_id: EntityId | None = None
    content: str = Field(
        "",
        description="1 to 4,000 characters after trimming (configurable); "
        "may be empty when the message carries attachments",
    )
    attachment_ids: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list,
        max_length=ATTACHMENTS_MAX,
        description="Up to 10 attachments uploaded by the sender (POST /v1/attachments)",
    )
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
    await ratelimit.limit_user(app, "send", principal.user_id)
    kind, receiver_id = receiver_of(body)
    content = body.content.strip()
    limit = app[SETTINGS].message_max_chars
    least = 0 if body.attachment_ids else 1
    if not least <= len(content) <= limit:
        raise Invalid(
            f"content must be {least} to {limit} characters after trimming",
            code="invalid_content",
            details={"length": len(content), "max": limit},
        )
    reply = await _reply_ref(app, kind, receiver_id, principal.user_id, body.reply_to)
    sent_at = body.sent_at
    if sent_at is not None and sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=UTC)
    message_id = new_id()
    attachments = await bind_to_message(
        app,
        principal.user_id,
        body.attachment_ids,
        message_id,
        conversation_id(kind, receiver_id, principal.user_id),
    )
    payload = SendMessagePayload(
        message_id=message_id,
        sender_id=principal.user_id,
        receiver_kind=kind,
        receiver_id=receiver_id,
        content=content,
        attachments=attachments,
        client_msg_id=str(body.client_msg_id) if body.client_msg_id else None,
        client_sent_at=from_millis(to_millis(sent_at)) if sent_at else None,
        created_at=from_millis(to_millis(datetime.now(UTC))),
        reply_to=reply,
    )
    try:
        result = await app[REQUESTS].request(
            MESSAGES_COMMANDS, receiver_id, SendMessage.of(payload)
        )
    except DomainError as exc:
        # Refused for good: its references go. A timeout may still be accepted: keep them.
        if attachments and not isinstance(exc, ReplyTimeout) and exc.status < 500:
            await unbind_from_message(app, body.attachment_ids, message_id)
        raise
    view = MessageView.model_validate(result)
    if attachments and view.id != message_id:
        # A retry answered with the original message, which holds its own references.
        await unbind_from_message(app, body.attachment_ids, message_id)
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

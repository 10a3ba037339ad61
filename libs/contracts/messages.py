"""Message commands and events (messages.commands.v1, messages.events.v1).

SendMessage: producer gateway, consumer message_service, key receiver_id.
MessageAccepted: producer message_service, consumers persister and
delivery_service, key receiver_id. A receiver is a user (direct message: the
recipient's inbox) or a group (the group's log); `seq` is gap-free per receiver.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from libs.contracts.envelope import Envelope, Payload

ReceiverKind = Literal["user", "group"]
CONTENT_MAX_CHARS = 4000


class SendMessagePayload(Payload):
    message_id: str  # UUIDv7 made by the gateway
    sender_id: str
    receiver_kind: ReceiverKind
    receiver_id: str
    content: str = Field(min_length=1, max_length=CONTENT_MAX_CHARS)
    client_msg_id: str | None = None
    client_sent_at: datetime | None = None
    created_at: datetime  # gateway clock, at acceptance of the HTTP/WS request


class SendMessage(Envelope):
    """Reply: the accepted message (MessageAcceptedPayload fields, status 'sent')."""

    type: Literal["SendMessage"] = "SendMessage"
    payload: SendMessagePayload


class MessageAcceptedPayload(Payload):
    message_id: str
    receiver_kind: ReceiverKind
    receiver_id: str
    seq: int = Field(ge=1)
    sender_id: str
    content: str
    client_msg_id: str | None = None
    client_sent_at: datetime | None = None
    created_at: datetime


class MessageAccepted(Envelope):
    type: Literal["MessageAccepted"] = "MessageAccepted"
    payload: MessageAcceptedPayload


MESSAGE_COMMANDS = (SendMessage,)
MESSAGE_EVENTS = (MessageAccepted,)

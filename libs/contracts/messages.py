"""Message commands and events (messages.commands.v1, messages.events.v1).

SendMessage: producer gateway, consumer message_service, key receiver_id.
MessageAccepted: producer message_service, consumers persister and
delivery_service, key receiver_id. A receiver is a user (direct message: the
recipient's inbox) or a group (the group's log); `seq` is gap-free per receiver.

Order of a conversation: by (created_at, message_id). message_service stamps
`created_at` at acceptance, strictly increasing per receiver (its clock, at
least 1 ms after the receiver's previous message), so within one receiver the
order by created_at is the order by seq; the UUIDv7 message_id breaks ties
between the two directions of a direct conversation. `position()` spells that
order as one sortable string, used by the history cache and cursors.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from libs.contracts.envelope import Envelope, Payload

ReceiverKind = Literal["user", "group"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CONTENT_MAX_CHARS = 4000


class ReplyRef(Payload):
    """What a reply stores of the message it answers (no copy of its content: the
    preview is read from the original at read time, so a delete purges it too)."""

    id: str
    sender_id: str
    #: The original's receiver and position (libs.contracts.messages.position): where
    #: readers find it in the cache or on its shard.
    receiver_id: str
    position: str


class SendMessagePayload(Payload):
    message_id: str  # UUIDv7 made by the gateway
    sender_id: str
    receiver_kind: ReceiverKind
    receiver_id: str
    content: str = Field(min_length=1, max_length=CONTENT_MAX_CHARS)
    client_msg_id: str | None = None
    client_sent_at: datetime | None = None
    created_at: datetime  # gateway clock, at acceptance of the HTTP/WS request
    reply_to: ReplyRef | None = None


class SendMessage(Envelope):
    """Reply: the accepted message (MessageAcceptedPayload fields, status 'sent').

    A repeated (sender_id, client_msg_id) for the same receiver answers the
    original message (its message_id, seq and created_at), never a new copy.
    """

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
    #: Acceptance time (message_service), millisecond precision, increasing per receiver.
    created_at: datetime
    reply_to: ReplyRef | None = None


class MessageAccepted(Envelope):
    """Example: {"type": "MessageAccepted", "payload": {"message_id": "0193...",
    "receiver_kind": "user", "receiver_id": "<bob>", "seq": 42, "sender_id": "<ada>",
    "content": "hi", "client_msg_id": null, "client_sent_at": null,
    "created_at": "2026-11-22T04:00:00.123Z"}}. Re-emitted unchanged (same id and
    seq) when a command is redelivered or retried: consumers dedupe by message_id."""

    type: Literal["MessageAccepted"] = "MessageAccepted"
    payload: MessageAcceptedPayload


class ReceiverRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: ReceiverKind
    id: str


class ReplyView(BaseModel):
    """The message a reply answers: a short preview of its current content, or its
    tombstone (deleted, no preview) once it was deleted."""

    id: str
    sender_id: str
    preview: str | None = None
    deleted: bool = False
    #: Internal: where readers find the original (never serialized to clients).
    receiver_id: str | None = Field(None, exclude=True)
    position: str | None = Field(None, exclude=True)


class MessageView(BaseModel):
    """A message as clients see it (POST /v1/messages, history, sync, pushes), in its
    current state: edited content with `edited_at`, or a tombstone (`deleted`, no
    content, reactions or reply preview)."""

    id: str
    seq: int
    receiver: ReceiverRef
    sender_id: str
    content: str
    created_at: datetime
    client_msg_id: str | None = None
    client_sent_at: datetime | None = None
    #: sent | delivered | read, for messages the caller sent; None for others.
    status: str | None = None
    #: Group messages the caller sent: members (but the sender) that got / read it.
    delivered_count: int | None = None
    read_count: int | None = None
    edited_at: datetime | None = None
    deleted: bool = False
    #: emoji -> how many users reacted with it.
    reactions: dict[str, int] = Field(default_factory=dict)
    #: The emojis the caller reacted with.
    my_reactions: list[str] = Field(default_factory=list)
    reply_to: ReplyView | None = None
    #: Internal: emoji -> the users who reacted (stored and cached; rendered into
    #: `reactions` / `my_reactions` for each caller, never serialized to clients).
    reactors: dict[str, list[str]] | None = Field(None, exclude=True)

    @classmethod
    def of(cls, accepted: MessageAcceptedPayload, status: str | None = None) -> MessageView:
        reply = accepted.reply_to
        return cls(
            id=accepted.message_id,
            seq=accepted.seq,
            receiver=ReceiverRef(kind=accepted.receiver_kind, id=accepted.receiver_id),
            sender_id=accepted.sender_id,
            content=accepted.content,
            created_at=accepted.created_at,
            client_msg_id=accepted.client_msg_id,
            client_sent_at=accepted.client_sent_at,
            status=status,
            reply_to=(
                ReplyView(
                    id=reply.id,
                    sender_id=reply.sender_id,
                    receiver_id=reply.receiver_id,
                    position=reply.position,
                )
                if reply is not None
                else None
            ),
        )

    def stored(self) -> dict[str, Any]:
        """The JSON-ready form kept in the caches: the view plus its internal fields
        (reactors, the reply's location), without per-caller fields."""
        data = self.model_dump(mode="json", exclude={"status", "my_reactions", "reactions"})
        data["reactors"] = self.reactors or {}
        if self.reply_to is not None:
            data["reply_to"]["receiver_id"] = self.reply_to.receiver_id
            data["reply_to"]["position"] = self.reply_to.position
        return data


def to_millis(moment: datetime) -> int:
    """Milliseconds since the epoch, floored (MongoDB's datetime precision)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def from_millis(millis: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=millis)


def position(created_at: datetime, message_id: str) -> str:
    """The sortable position of a message in its conversation: 'millis(15 digits):id'."""
    return f"{to_millis(created_at):015d}:{message_id}"


def conversation_id(kind: ReceiverKind, receiver_id: str, sender_id: str) -> str:
    """A direct conversation is the unordered pair of users; a group's is the group."""
    if kind == "group":
        return f"g:{receiver_id}"
    low, high = sorted((receiver_id, sender_id))
    return f"d:{low}:{high}"


#: How long a reply's preview of the original is, in characters.
REPLY_PREVIEW_CHARS = 100

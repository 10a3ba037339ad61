"""Changes to conversations: message edits, deletes, reactions, and the inbox's
per-user settings (messages.commands.v1, messages.events.v1,
conversations.commands.v1). docs/conversations.md describes the flow.

Every change is an entry of a receiver's seq log (a user's inbox or a group's
log), like a message: message_service gives it the receiver's next seq, so
`/v1/sync` and the WebSocket `resume` deliver it gap-free and in order with the
messages.

- ChangeMessage (gateway -> message_service, key = the message's receiver): edit,
  delete, react, unreact. message_service checks the message's state (deleted:
  409; edit window: 403), applies it to its ledger entry, logs the event in the
  message's own log and, for a direct message, asks the other participant's
  inbox to log it too (AppendEvent). Reply: the message in its new state.
- AppendEvent (-> message_service, key = the receiver whose log gets it): log an
  event made elsewhere: the mirror of a direct change, or a `conversation_updated`
  for the user's own devices (from delivery_service, which owns the inbox).
  Idempotent by `event_id` per receiver.
- ConversationEvent (message_service -> persister, delivery_service, key =
  receiver_id): a logged event, with its seq.
- UpdateConversationSettings (gateway -> delivery_service, key = user_id): mute,
  archive. Reply: ConversationView.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from libs.contracts.envelope import Envelope, Payload
from libs.contracts.messages import (
    CONTENT_MAX_CHARS,
    MessageAccepted,
    MessageView,
    ReceiverKind,
    SendMessage,
)

ChangeAction = Literal["edit", "delete", "react", "unreact"]
EventType = Literal["message_edited", "message_deleted", "reaction", "conversation_updated"]
#: The event types that are about one message (the others are about a conversation).
MESSAGE_EVENT_TYPES = frozenset({"message_edited", "message_deleted", "reaction"})


class ConversationRef(Payload):
    """A conversation as one user names it: the other user, or the group."""

    kind: ReceiverKind
    id: str


class ChangeMessagePayload(Payload):
    #: UUIDv7 made by the gateway: the event's id in the message's log (dedupe).
    change_id: str
    actor_id: str
    action: ChangeAction
    message_id: str
    #: Where the message lives: its receiver (the command's key) and seq there.
    receiver_kind: ReceiverKind
    receiver_id: str
    seq: int = Field(ge=1)
    content: str | None = Field(None, min_length=1, max_length=CONTENT_MAX_CHARS)
    emoji: str | None = Field(None, min_length=1, max_length=64)
    created_at: datetime


class ChangeMessage(Envelope):
    type: Literal["ChangeMessage"] = "ChangeMessage"
    payload: ChangeMessagePayload


class EventBody(Payload):
    """What an event says, whichever log it is in."""

    type: EventType
    actor_id: str
    #: The conversation, as the owner of the log names it (for an inbox: the peer).
    conversation: ConversationRef
    message_id: str | None = None
    #: The message's seq in its own log (the receiver it was sent to).
    message_seq: int | None = None
    #: message_edited: the new content and when.
    content: str | None = None
    edited_at: datetime | None = None
    #: reaction: the emoji, whether the actor added or removed it, the new count.
    emoji: str | None = None
    added: bool | None = None
    count: int | None = None
    #: conversation_updated: the user's view of the conversation after the change.
    unread_count: int | None = None
    muted: bool | None = None
    archived: bool | None = None
    read_seq: int | None = None


class AppendEventPayload(Payload):
    event_id: str
    receiver_kind: ReceiverKind
    receiver_id: str
    body: EventBody
    #: See ConversationEventPayload.applies.
    applies: bool = False


class AppendEvent(Envelope):
    type: Literal["AppendEvent"] = "AppendEvent"
    payload: AppendEventPayload


class ConversationEventPayload(Payload):
    event_id: str
    receiver_kind: ReceiverKind
    receiver_id: str
    seq: int = Field(ge=1)
    created_at: datetime
    body: EventBody
    #: This is the message's own log: the persister applies the change to the stored
    #: message (mirrors in the other inbox of a direct chat are not applied twice).
    applies: bool = False


class ConversationEvent(Envelope):
    """Example: {"type": "ConversationEvent", "payload": {"event_id": "0193...",
    "receiver_kind": "user", "receiver_id": "<bob>", "seq": 43, "created_at": "...",
    "body": {"type": "message_edited", "actor_id": "<ada>", "conversation":
    {"kind": "user", "id": "<ada>"}, "message_id": "0193...", "content": "fixed",
    "edited_at": "..."}, "applies": true}}"""

    type: Literal["ConversationEvent"] = "ConversationEvent"
    payload: ConversationEventPayload


class UpdateConversationSettingsPayload(Payload):
    user_id: str
    conversation: ConversationRef
    muted: bool | None = None
    archived: bool | None = None


class UpdateConversationSettings(Envelope):
    type: Literal["UpdateConversationSettings"] = "UpdateConversationSettings"
    payload: UpdateConversationSettingsPayload


MESSAGE_COMMANDS = (SendMessage, ChangeMessage, AppendEvent)
MESSAGE_EVENTS = (MessageAccepted, ConversationEvent)
CONVERSATION_COMMANDS = (UpdateConversationSettings,)


class EventView(BaseModel):
    """An event as clients see it (WebSocket frames, /v1/sync `events`)."""

    id: str
    type: EventType
    seq: int
    receiver: dict[str, str]
    created_at: datetime
    actor_id: str
    conversation: dict[str, str]
    message_id: str | None = None
    message_seq: int | None = None
    content: str | None = None
    edited_at: datetime | None = None
    emoji: str | None = None
    added: bool | None = None
    count: int | None = None
    unread_count: int | None = None
    muted: bool | None = None
    archived: bool | None = None
    read_seq: int | None = None

    @classmethod
    def of(cls, event: ConversationEventPayload) -> EventView:
        body = event.body
        return cls(
            id=event.event_id,
            type=body.type,
            seq=event.seq,
            receiver={"kind": event.receiver_kind, "id": event.receiver_id},
            created_at=event.created_at,
            actor_id=body.actor_id,
            conversation={"kind": body.conversation.kind, "id": body.conversation.id},
            message_id=body.message_id,
            message_seq=body.message_seq,
            content=body.content,
            edited_at=body.edited_at,
            emoji=body.emoji,
            added=body.added,
            count=body.count,
            unread_count=body.unread_count,
            muted=body.muted,
            archived=body.archived,
            read_seq=body.read_seq,
        )

    def frame(self) -> dict[str, Any]:
        """The WebSocket frame: {"type": <event type>, "event": <this, nulls left out>}."""
        return {"type": self.type, "event": self.model_dump(mode="json", exclude_none=True)}


class ConversationView(BaseModel):
    """One entry of GET /v1/conversations."""

    kind: ReceiverKind
    id: str
    title: str
    last_message: MessageView | None = None
    unread_count: int
    last_activity_at: datetime
    muted: bool
    archived: bool

"""The versioned envelope every Kafka record carries (README.md, Architecture).

A concrete message subclasses `Envelope`, fixing `type` to a Literal and
`payload` to a frozen `Payload` model. Example, on the wire (JSON):

    {"id": "0193f1c2-...", "type": "RegisterUser", "version": 1,
     "occurred_at": "2026-11-22T04:00:00.123Z", "correlation_id": "c-1",
     "reply_to": "gateway.replies.gw-a", "payload": {"username": "ada", ...}}

`Codec` decodes the records of one topic into the union of its message types,
discriminated by `type`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from libs.ids import new_id


class Payload(BaseModel):
    """Base of every command/event payload: immutable; unknown fields are ignored.

    Records are read by other services, which may run an older build during a
    rolling deploy: a field a newer writer added must not send the record to the
    DLQ. Only the API edge (the gateway's request models) refuses unknown fields.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")


class Envelope(BaseModel):
    """Fields common to every record. Subclasses narrow `type` and `payload`.
    Unknown fields are ignored, as in Payload (forward compatibility)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(default_factory=new_id)
    type: str
    version: Literal[1] = 1
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    correlation_id: str | None = None
    #: Physical topic the owning service answers on (request-reply), if any.
    reply_to: str | None = None
    payload: Any

    @classmethod
    def of(
        cls, payload: Payload, *, correlation_id: str | None = None, reply_to: str | None = None
    ) -> Self:
        """Wrap a payload in a fresh envelope of this message type."""
        return cls(payload=payload, correlation_id=correlation_id, reply_to=reply_to)

    def to_bytes(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)


class ReplyPayload(Payload):
    """The answer to a request: `result` when ok, else `error` (DomainError.as_dict())."""

    ok: bool
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class Reply(Envelope):
    """Producer: the service that handled a request. Consumer: the asking gateway.
    Key: correlation id. Topic: the gateway's reply topic (envelope.reply_to)."""

    type: Literal["Reply"] = "Reply"
    payload: ReplyPayload


class DecodeError(Exception):
    """A record that is not a valid message of its topic (it goes to the DLQ)."""


class Codec:
    """Decodes the bytes of one topic into its message types."""

    def __init__(self, *message_types: type[Envelope]) -> None:
        if not message_types:
            raise ValueError("a codec needs at least one message type")
        self.message_types = message_types
        if len(message_types) == 1:
            self._adapter: TypeAdapter[Any] = TypeAdapter(message_types[0])
        else:
            union = Union[message_types]  # noqa: UP007 - runtime union of classes
            self._adapter = TypeAdapter(Annotated[union, Field(discriminator="type")])

    def decode(self, raw: bytes | None) -> Envelope:
        if raw is None:
            raise DecodeError("empty record (tombstone) where a message was expected")
        try:
            return self._adapter.validate_json(raw)
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            raise DecodeError(str(exc)[:2000]) from None

"""Delivery and read receipts (receipts.commands.v1, receipts.events.v1; docs/realtime.md).

Status is kept as watermarks, not rows per message. A watermark lives in the
seq space of one receiver (a user's inbox or a group's log):

- delivered: per (receiver, reader). For a direct message the reader is the
  inbox owner (receiver == reader); for a group, any member.
- read: per (receiver, reader, thread). For a direct message the thread is the
  peer whose messages in the reader's inbox were read; for a group the thread
  is the group itself.

Watermarks only move forward. A message (receiver, seq) is delivered to a reader
when max(delivered, read) >= seq, and read when read >= seq.

AdvanceWatermark: producer gateway (WebSocket ack/read frames, POST .../read),
consumer delivery_service, key receiver_id. Reply (when asked): WatermarkView.

ReceiptChanged: producer delivery_service, consumer delivery_service (push to
the sender's sockets), key sender_id (the user to notify).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from libs.contracts.envelope import Envelope, Payload
from libs.contracts.messages import ReceiverKind

WatermarkKind = Literal["delivered", "read"]


class AdvanceWatermarkPayload(Payload):
    reader_id: str
    receiver_kind: ReceiverKind
    #: The seq space: the reader's own inbox (user) or a group.
    receiver_id: str
    #: Direct: the peer whose messages were read; group: the group id.
    thread_id: str
    kind: WatermarkKind
    seq: int = Field(ge=1)


class AdvanceWatermark(Envelope):
    """Move a reader's delivered/read watermark forward (a lower seq is a no-op)."""

    type: Literal["AdvanceWatermark"] = "AdvanceWatermark"
    payload: AdvanceWatermarkPayload


class WatermarkView(BaseModel):
    """Reply to AdvanceWatermark: the watermarks after the command."""

    receiver_id: str
    reader_id: str
    thread_id: str
    delivered_seq: int
    read_seq: int


class ReceiptChangedPayload(Payload):
    #: The sender of the messages the receipt is about (the user to notify).
    sender_id: str
    reader_id: str
    receiver_kind: ReceiverKind
    receiver_id: str
    thread_id: str
    kind: WatermarkKind
    #: Every message of `sender_id` in `receiver_id` with seq <= up_to_seq is now `kind`.
    up_to_seq: int = Field(ge=1)


class ReceiptChanged(Envelope):
    type: Literal["ReceiptChanged"] = "ReceiptChanged"
    payload: ReceiptChangedPayload


RECEIPT_COMMANDS = (AdvanceWatermark,)
RECEIPT_EVENTS = (ReceiptChanged,)

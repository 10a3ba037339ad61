"""Delivery and read receipts: the WebSocket `ack` and `read` frames, and the one
path that moves a watermark (also behind POST /v1/conversations/.../read).

An AdvanceWatermark command goes to receipts.commands.v1 keyed by the receiver;
frames fire and forget, the REST routes wait for delivery_service's answer."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import Field

from gateway.auth import Principal
from gateway.keys import KEYS, PRODUCER, REDIS, REQUESTS
from gateway.sockets import Connection
from gateway.ws.frames import CONVERSATION_PATTERN, ID_PATTERN, ClientFrame, FrameHandler
from libs.contracts.receipts import AdvanceWatermark, AdvanceWatermarkPayload, WatermarkView
from libs.contracts.topics import RECEIPTS_COMMANDS
from libs.errors import Invalid, NotFound
from libs.group_projection import group_members
from libs.projections import user_exists


class AckFrame(ClientFrame):
    type: Literal["ack"]
    receiver: str = Field(pattern=ID_PATTERN)
    seq: int = Field(ge=1, le=2**53)


class ReadFrame(ClientFrame):
    type: Literal["read"]
    conversation: str = Field(pattern=CONVERSATION_PATTERN)
    seq: int = Field(ge=1, le=2**53)


async def require_member(app: web.Application, group_id: str, user_id: str) -> dict[str, str]:
    members = await group_members(app[REDIS], app[KEYS], group_id)
    if not members or user_id not in members:
        raise NotFound("no such group", code="group_not_found")
    return members


async def on_ack(
    app: web.Application, conn: Connection, principal: Principal, frame: AckFrame
) -> None:
    kind = "user" if frame.receiver == principal.user_id else "group"
    if kind == "group":
        await require_member(app, frame.receiver, principal.user_id)
    await advance(
        app,
        principal.user_id,
        kind,
        frame.receiver,
        frame.receiver,
        "delivered",
        frame.seq,
        wait_reply=False,
    )


async def on_read(
    app: web.Application, conn: Connection, principal: Principal, frame: ReadFrame
) -> None:
    kind, target = frame.conversation.split(":", 1)
    await read(app, principal.user_id, kind, target, frame.seq, wait_reply=False)


async def read(
    app: web.Application, reader_id: str, kind: str, target: str, seq: int, *, wait_reply: bool
) -> WatermarkView | None:
    """Mark a conversation read up to `seq` (of the reader's inbox, or the group's log)."""
    if kind == "group":
        await require_member(app, target, reader_id)
        return await advance(
            app, reader_id, "group", target, target, "read", seq, wait_reply=wait_reply
        )
    if target == reader_id:
        raise Invalid("a conversation is with another user", code="invalid_conversation")
    if not await user_exists(app[REDIS], app[KEYS], target):
        raise NotFound("no such user", code="user_not_found")
    return await advance(
        app, reader_id, "user", reader_id, target, "read", seq, wait_reply=wait_reply
    )


async def advance(
    app: web.Application,
    reader_id: str,
    receiver_kind: str,
    receiver_id: str,
    thread_id: str,
    kind: str,
    seq: int,
    *,
    wait_reply: bool,
) -> WatermarkView | None:
    command = AdvanceWatermark.of(
        AdvanceWatermarkPayload(
            reader_id=reader_id,
            receiver_kind=receiver_kind,  # type: ignore[arg-type]
            receiver_id=receiver_id,
            thread_id=thread_id,
            kind=kind,  # type: ignore[arg-type]
            seq=seq,
        )
    )
    if not wait_reply:
        await app[PRODUCER].send_and_wait(RECEIPTS_COMMANDS, receiver_id, command)
        return None
    result = await app[REQUESTS].request(RECEIPTS_COMMANDS, receiver_id, command)
    return WatermarkView.model_validate(result)


FRAMES: dict[str, tuple[type[ClientFrame], FrameHandler]] = {
    "ack": (AckFrame, on_ack),
    "read": (ReadFrame, on_read),
}

"""Presence and typing over the WebSocket: the `typing` client frame (forwarded to
the conversation's peers, at most once per conversation per second, never across
a block), and the presence announcements of a socket's opening and closing
(gateway.push resolves the peers and publishes)."""

from __future__ import annotations

import time
from typing import Literal

from aiohttp import web
from pydantic import Field

from gateway.auth import Principal
from gateway.push import announce_connection, push_presence, push_typing
from gateway.sockets import Connection
from gateway.ws.frames import CONVERSATION_PATTERN, ClientFrame, FrameHandler
from gateway.ws.receipts import require_member
from libs.errors import Invalid


class TypingFrame(ClientFrame):
    type: Literal["typing"]
    conversation: str = Field(pattern=CONVERSATION_PATTERN)


async def on_typing(
    app: web.Application, conn: Connection, principal: Principal, frame: TypingFrame
) -> None:
    kind, target = frame.conversation.split(":", 1)
    if kind == "group":
        await require_member(app, target, principal.user_id)
    elif target == principal.user_id:
        raise Invalid("one does not type to oneself", code="invalid_conversation")
    if conn.typing_allowed(frame.conversation, time.monotonic()):
        await push_typing(app, principal.user_id, kind, target)


async def socket_opened(app: web.Application, conn: Connection, went_online: bool) -> None:
    """Tell the peers if the user came online; give the socket its peers' presence."""
    await announce_connection(app, conn.user_id, went_online, conn.send_frame)


async def socket_closed(app: web.Application, user_id: str, went_offline: bool) -> None:
    if went_offline:
        await push_presence(app, user_id, False)


FRAMES: dict[str, tuple[type[ClientFrame], FrameHandler]] = {"typing": (TypingFrame, on_typing)}

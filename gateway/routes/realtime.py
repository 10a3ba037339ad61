"""Gateway endpoints: real-time delivery over WebSocket, receipts and presence.

- GET /v1/ws: the WebSocket (docs/realtime.md has the frame reference). Auth at
  the handshake: `Authorization: Bearer <token>` or `?ticket=` from POST
  /v1/ws-ticket (browsers cannot set headers); a browser's Origin must be in
  GATEWAY_WS_ALLOWED_ORIGINS or be the gateway's own (403 otherwise); at most
  GATEWAY_WS_MAX_CONNECTIONS_PER_USER sockets per user (429).
- POST /v1/ws-ticket: a single-use ticket valid GATEWAY_WS_TICKET_TTL_S seconds.
- POST /v1/conversations/users/{user_id}/read, .../groups/{group_id}/read {seq}.
- GET /v1/messages/{message_id}/receipts: per-member status of one message.
- GET /v1/presence/{user_id}: online / last seen.

Client frames are dispatched by the frame-handler table of gateway/ws/ (a module
per frame family: messages, receipts, presence, sync); docs/realtime.md lists
every client and server frame.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import time
from collections.abc import Awaitable
from typing import Any, Literal

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import BaseModel, ConfigDict, Field

from gateway.api import Routes
from gateway.auth import Principal, authenticate_token, bearer_token
from gateway.keys import KEYS, MONGO, REDIS
from gateway.push import (
    HUB,
    REALTIME_SETTINGS,
    presence_of,
    presence_visible,
    setup_realtime,
)
from gateway.settings import GatewaySettings
from gateway.sockets import CLOSE_TOO_MANY_CONNECTIONS
from gateway.ws import dispatch
from gateway.ws import presence as presence_frames
from gateway.ws.frames import error_frame
from gateway.ws.receipts import read
from libs.contracts.receipts import WatermarkView
from libs.errors import (
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    Unauthorized,
)
from libs.group_projection import group_members
from libs.logging import get_logger
from libs.readmodels.messages import locate_message
from libs.receipt_projection import watermarks_of

log = get_logger(__name__)
routes = Routes(tag="realtime")

# -- REST models ----------------------------------------------------------------------


class TicketView(BaseModel):
    ticket: str
    expires_in_s: int


class ReadBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seq: int = Field(ge=1, le=2**53, description="Everything up to this seq is read")


class MemberReceipt(BaseModel):
    user_id: str
    status: Literal["sent", "delivered", "read"]


class ReceiptsView(BaseModel):
    message_id: str
    receiver_kind: Literal["user", "group"]
    receiver_id: str
    seq: int
    delivered_count: int
    read_count: int
    members: list[MemberReceipt]


class PresenceView(BaseModel):
    user_id: str
    online: bool
    last_seen: int | None = Field(None, description="Epoch seconds, when offline")


# -- the WebSocket --------------------------------------------------------------------


def _check_origin(request: web.Request) -> None:
    origin = request.headers.get("Origin")
    if origin is None:
        return  # not a browser
    if origin.rstrip("/") == f"{request.scheme}://{request.host}":
        return  # the web client this gateway serves (same origin)
    if origin.rstrip("/") not in request.app[REALTIME_SETTINGS].origins:
        raise Forbidden("this origin may not open a WebSocket", code="origin_not_allowed")


async def _handshake_principal(request: web.Request) -> Principal:
    ticket = request.query.get("ticket")
    if ticket is not None:
        if len(ticket) > 128:
            raise Unauthorized("the ticket is malformed", code="invalid_ticket")
        value = await request.app[REDIS].getdel(request.app[KEYS].ws_ticket(ticket))
        if not value:
            raise Unauthorized("the ticket is invalid, used or expired", code="invalid_ticket")
        user_id, _, token_hash = value.partition("|")
        owner, expires_at = await request.app[REDIS].hmget(
            request.app[KEYS].session(token_hash), "user_id", "expires_at"
        )
        if owner != user_id or float(expires_at or 0) <= time.time():
            raise Unauthorized("the session behind the ticket ended", code="invalid_token")
        return Principal(user_id=user_id, token_hash=token_hash, expires_at=float(expires_at))
    return await authenticate_token(request.app, bearer_token(request))


@routes.get(
    "/v1/ws",
    auth=False,
    summary="Open the real-time WebSocket",
    errors=(401, 403, 429),
    description="Upgrade to a WebSocket; see the module docs and docs/realtime.md for frames.",
)
async def websocket(request: web.Request) -> web.StreamResponse:
    _check_origin(request)
    principal = await _handshake_principal(request)
    settings = request.app[REALTIME_SETTINGS]
    hub = request.app[HUB]
    if await hub.live_connection_count(principal.user_id) >= settings.max_connections_per_user:
        raise RateLimited(
            "too many open connections for this user",
            code="too_many_connections",
            details={"max": settings.max_connections_per_user, "retry_after_s": 5},
        )
    ws = web.WebSocketResponse(
        heartbeat=settings.heartbeat_s,
        max_msg_size=settings.max_frame_bytes,
        compress=settings.compression,
    )
    await ws.prepare(request)
    _bound_send_buffer(request, settings.socket_send_buffer_bytes)
    conn = hub.open(principal, ws, request.transport)
    try:
        try:
            went_online = await hub.register(conn)
        except Exception as exc:  # without a registry entry nothing could reach it
            log.warning("socket register failed", error=f"{type(exc).__name__}: {exc}")
            await conn.close(WSCloseCode.INTERNAL_ERROR, "registry unavailable; retry")
            return ws
        if went_online is None:  # lost the atomic claim to a concurrent handshake
            await conn.close(CLOSE_TOO_MANY_CONNECTIONS, "too many open connections")
            return ws
        conn.send_frame({"type": "hello", "connection_id": conn.id, "user_id": principal.user_id})
        await _safely(presence_frames.socket_opened(request.app, conn, went_online))
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await dispatch(request.app, conn, principal, msg.data)
            elif msg.type == WSMsgType.BINARY:
                conn.send_frame(error_frame(None, Invalid("frames are JSON text", code="binary")))
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        await hub.discard(conn)
        try:
            await presence_frames.socket_closed(
                request.app, principal.user_id, await hub.unregister(conn)
            )
        except Exception as exc:  # a dead Redis must not break the close path
            log.warning("socket unregister failed", error=f"{type(exc).__name__}: {exc}")
    return ws


def _bound_send_buffer(request: web.Request, size: int) -> None:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if size and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


async def _safely(action: Awaitable[Any]) -> None:
    try:
        await action
    except Exception as exc:
        log.warning("realtime side effect failed", error=f"{type(exc).__name__}: {exc}")


# -- REST -----------------------------------------------------------------------------


@routes.post(
    "/v1/ws-ticket",
    response=TicketView,
    status=201,
    summary="A single-use ticket to open the WebSocket from a browser",
)
async def create_ws_ticket(request: web.Request, principal: Principal) -> TicketView:
    ttl = request.app[REALTIME_SETTINGS].ticket_ttl_s
    ticket = secrets.token_urlsafe(32)
    await request.app[REDIS].set(
        request.app[KEYS].ws_ticket(ticket), f"{principal.user_id}|{principal.token_hash}", ex=ttl
    )
    return TicketView(ticket=ticket, expires_in_s=ttl)


@routes.post(
    "/v1/conversations/users/{user_id}/read",
    body=ReadBody,
    response=WatermarkView,
    summary="Mark a direct conversation read up to a seq (of the caller's inbox)",
    errors=(404, 429),
)
async def read_direct(request: web.Request, principal: Principal, body: ReadBody) -> Any:
    peer = request.match_info["user_id"]
    return await read(request.app, principal.user_id, "user", peer, body.seq, wait_reply=True)


@routes.post(
    "/v1/conversations/groups/{group_id}/read",
    body=ReadBody,
    response=WatermarkView,
    summary="Mark a group conversation read up to a seq (of the group's log)",
    errors=(404, 429),
)
async def read_group(request: web.Request, principal: Principal, body: ReadBody) -> Any:
    group_id = request.match_info["group_id"]
    return await read(request.app, principal.user_id, "group", group_id, body.seq, wait_reply=True)


async def find_message(app: web.Application, message_id: str) -> tuple[str, str, int, str] | None:
    """(receiver_kind, receiver_id, seq, sender_id) of a message, or None."""
    ref = await locate_message(app[MONGO], app[REDIS], app[KEYS], message_id)
    if ref is None:
        return None
    return ref.receiver_kind, ref.receiver_id, ref.seq, ref.sender_id


@routes.get(
    "/v1/messages/{message_id}/receipts",
    response=ReceiptsView,
    summary="Per-member delivery status of one message the caller can see",
    errors=(404,),
)
async def message_receipts(request: web.Request, principal: Principal) -> ReceiptsView:
    app = request.app
    message_id = request.match_info["message_id"]
    if len(message_id) > 64:
        raise NotFound("no such message", code="message_not_found")
    found = await find_message(app, message_id)
    if found is None:
        raise NotFound("no such message", code="message_not_found")
    kind, receiver_id, seq, sender_id = found
    if kind == "group":
        members = await group_members(app[REDIS], app[KEYS], receiver_id)
        if not members or principal.user_id not in members:
            raise NotFound("no such message", code="message_not_found")
        readers = [m for m in members if m != sender_id]
    else:
        if principal.user_id not in (receiver_id, sender_id):
            raise NotFound("no such message", code="message_not_found")
        readers = [receiver_id]
    marks = (await watermarks_of(app[REDIS], app[KEYS], app[MONGO], [receiver_id]))[receiver_id]
    members_out: list[MemberReceipt] = []
    for reader in sorted(readers):
        read_field = reader if kind == "group" else sender_id
        read = marks.read.get(read_field, 0) >= seq
        delivered = marks.delivered_seq(reader, read_field) >= seq
        status = "read" if read else "delivered" if delivered else "sent"
        members_out.append(MemberReceipt(user_id=reader, status=status))
    return ReceiptsView(
        message_id=message_id,
        receiver_kind=kind,  # type: ignore[arg-type]
        receiver_id=receiver_id,
        seq=seq,
        delivered_count=sum(m.status != "sent" for m in members_out),
        read_count=sum(m.status == "read" for m in members_out),
        members=members_out,
    )


@routes.get(
    "/v1/presence/{user_id}",
    response=PresenceView,
    summary="Whether a contact is online, or when it was last seen",
    errors=(404,),
)
async def presence(request: web.Request, principal: Principal) -> PresenceView:
    """Visible to contacts only: a user with a direct conversation with the caller or a
    group in common, and not blocked either way; anyone else is 404."""
    user_id = request.match_info["user_id"]
    redis, keys = request.app[REDIS], request.app[KEYS]
    if len(user_id) > 64 or not await presence_visible(redis, keys, principal.user_id, user_id):
        raise NotFound("no such contact", code="presence_not_visible")
    online, last_seen = await presence_of(redis, keys, user_id)
    return PresenceView(user_id=user_id, online=online, last_seen=None if online else last_seen)


def setup(app: web.Application, settings: GatewaySettings) -> None:
    setup_realtime(app, settings.realtime)

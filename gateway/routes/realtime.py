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

Client frames (JSON, `type` discriminates; `ref` is echoed in the answer):
  {"type": "send", "ref": "r1", "message": <POST /v1/messages body>}
      -> {"type": "sent", "ref": "r1", "message": <MessageView>} or an error frame;
      sends are answered concurrently (up to 64 in flight per socket), so a client
      that needs two messages in order waits for the first one's `sent`
  {"type": "ack", "receiver": "<own user id | group id>", "seq": 12}
  {"type": "read", "conversation": "user:<peer id> | group:<group id>", "seq": 12}
  {"type": "typing", "conversation": "user:<peer id> | group:<group id>"}
  {"type": "resume", "seqs": {"<receiver id>": <last seq seen>, ...}}
      -> the missed message frames, then {"type": "resumed", "seqs", "complete"};
      live pushes held meanwhile follow; a socket never gets the same message id twice
      (within its last 4,096 messages), so the seam has no gap and no duplicate
Server frames: hello, message, sent, receipt, typing, presence, resumed, error
({"type": "error", "ref", "error": {code, message, details, status}}).
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import time
from collections.abc import Awaitable
from typing import Annotated, Any, Literal

import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from gateway.api import Routes, validation_details
from gateway.auth import Principal, authenticate_token, bearer_token
from gateway.history import read_sync
from gateway.keys import KEYS, MONGO, PRODUCER, REDIS, REQUESTS
from gateway.push import (
    HUB,
    REALTIME_SETTINGS,
    announce_connection,
    mutual_blocks,
    presence_of,
    push_presence,
    push_typing,
    setup_realtime,
)
from gateway.sending import SendMessageBody, send_message
from gateway.settings import GatewaySettings
from gateway.sockets import Connection
from gateway.views import render_views
from libs.contracts.messages import MessageView
from libs.contracts.receipts import AdvanceWatermark, AdvanceWatermarkPayload, WatermarkView
from libs.contracts.topics import RECEIPTS_COMMANDS
from libs.errors import (
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from libs.group_projection import group_members, user_groups
from libs.logging import get_logger
from libs.projections import user_exists
from libs.receipt_projection import watermarks_of

log = get_logger(__name__)
routes = Routes(tag="realtime")

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
CONVERSATION_PATTERN = r"^(user|group):[A-Za-z0-9_-]{1,64}$"
RESUME_PAGE = 500
RESUME_MAX_MESSAGES = 5000


# -- frames ---------------------------------------------------------------------------


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ref: str | None = Field(None, max_length=64)


class SendFrame(_Frame):
    type: Literal["send"]
    message: dict[str, Any]


class AckFrame(_Frame):
    type: Literal["ack"]
    receiver: str = Field(pattern=ID_PATTERN)
    seq: int = Field(ge=1, le=2**53)


class ReadFrame(_Frame):
    type: Literal["read"]
    conversation: str = Field(pattern=CONVERSATION_PATTERN)
    seq: int = Field(ge=1, le=2**53)


class TypingFrame(_Frame):
    type: Literal["typing"]
    conversation: str = Field(pattern=CONVERSATION_PATTERN)


class ResumeFrame(_Frame):
    """Replay what was missed: every message after these seqs (receiver_id -> last seq
    seen; receivers left out start at 0), then live pushes, with no gap or duplicate
    at the seam. Answered by {"type": "resumed", "ref", "seqs", "complete"}."""

    type: Literal["resume"]
    seqs: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict, max_length=10_000)


ClientFrame = Annotated[
    SendFrame | AckFrame | ReadFrame | TypingFrame | ResumeFrame, Field(discriminator="type")
]
CLIENT_FRAME = TypeAdapter(ClientFrame)


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
        heartbeat=settings.heartbeat_s, max_msg_size=settings.max_frame_bytes
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
        conn.send_frame({"type": "hello", "connection_id": conn.id, "user_id": principal.user_id})
        await _safely(
            announce_connection(request.app, principal.user_id, went_online, conn.send_frame)
        )
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await _on_frame(request.app, conn, principal, msg.data)
            elif msg.type == WSMsgType.BINARY:
                conn.send_frame(_error_frame(None, Invalid("frames are JSON text", code="binary")))
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        await hub.discard(conn)
        try:
            if await hub.unregister(conn):
                await push_presence(request.app, principal.user_id, False)
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


def _error_frame(ref: str | None, error: DomainError) -> dict[str, Any]:
    return {"type": "error", "ref": ref, "error": error.as_dict()}


async def _on_frame(app: web.Application, conn: Connection, principal: Principal, raw: str) -> None:
    ref = None
    try:
        try:
            frame = CLIENT_FRAME.validate_json(raw)
        except ValidationError as exc:
            ref = _ref_of(raw)
            details = validation_details(exc)
            if any(d["type"] == "json_invalid" for d in details):
                raise Invalid("the frame is not valid JSON", code="invalid_json") from None
            raise Invalid(
                "the frame is invalid", code="invalid_frame", details={"fields": details}
            ) from None
        ref = frame.ref
        if isinstance(frame, SendFrame):
            # Sends run concurrently (each waits for message_service's reply), at most
            # SENDS_IN_FLIGHT per socket; past that the socket is not read (backpressure).
            await conn.sends.acquire()
            conn.spawn_send(_answer_send(app, conn, principal, frame))
        elif isinstance(frame, AckFrame):
            kind = "user" if frame.receiver == principal.user_id else "group"
            if kind == "group":
                await _require_member(app, frame.receiver, principal.user_id)
            await _advance(
                app,
                principal.user_id,
                kind,
                frame.receiver,
                frame.receiver,
                "delivered",
                frame.seq,
                wait_reply=False,
            )
        elif isinstance(frame, ReadFrame):
            kind, target = frame.conversation.split(":", 1)
            await _read(app, principal.user_id, kind, target, frame.seq, wait_reply=False)
        elif isinstance(frame, ResumeFrame):
            await _resume(app, conn, principal, frame)
        elif isinstance(frame, TypingFrame):
            kind, target = frame.conversation.split(":", 1)
            if kind == "group":
                await _require_member(app, target, principal.user_id)
            elif target == principal.user_id:
                raise Invalid("one does not type to oneself", code="invalid_conversation")
            if conn.typing_allowed(frame.conversation, time.monotonic()):
                await push_typing(app, principal.user_id, kind, target)
    except DomainError as error:
        conn.send_frame(_error_frame(ref, error))
    except Exception as exc:  # a dependency is down: tell the client, keep the socket
        log.warning("frame failed", error=f"{type(exc).__name__}: {exc}")
        conn.send_frame(_error_frame(ref, Unavailable("a dependency is unavailable; retry")))


async def _answer_send(
    app: web.Application, conn: Connection, principal: Principal, frame: SendFrame
) -> None:
    try:
        view = await _send(app, principal, frame.message)
        conn.send_frame({"type": "sent", "ref": frame.ref, "message": view})
    except DomainError as error:
        conn.send_frame(_error_frame(frame.ref, error))
    except Exception as exc:
        log.warning("send frame failed", error=f"{type(exc).__name__}: {exc}")
        conn.send_frame(_error_frame(frame.ref, Unavailable("a dependency is unavailable; retry")))
    finally:
        conn.sends.release()


async def _resume(
    app: web.Application, conn: Connection, principal: Principal, frame: ResumeFrame
) -> None:
    """Replay the missed messages (the sync read), holding live pushes until done."""
    groups = await user_groups(app[REDIS], app[KEYS], principal.user_id)
    blocked = await app[REDIS].smembers(app[KEYS].blocks(principal.user_id))
    receivers = [principal.user_id, *sorted(groups)]
    seqs = {r: frame.seqs.get(r, 0) for r in receivers}
    conn.held = []
    replayed = 0
    more = True
    try:
        while more and replayed < RESUME_MAX_MESSAGES:
            page, seqs, more = await read_sync(
                app, receivers, seqs, RESUME_PAGE, hidden_actors=blocked
            )
            messages = [e for e in page if isinstance(e, MessageView)]
            await render_views(app, principal.user_id, messages)
            for entry in page:
                if isinstance(entry, MessageView):
                    conn.replay(entry.model_dump(mode="json"))
                else:
                    conn.replay_frame(entry.frame())
            replayed += len(page)
            if not page:
                break
    finally:
        conn.release()
    conn.send_frame(
        {
            "type": "resumed",
            "ref": frame.ref,
            "seqs": {r: max(seqs.get(r, 0), conn.seen.get(r, 0)) for r in receivers},
            # False past RESUME_MAX_MESSAGES: the client pages the rest with GET /v1/sync.
            "complete": not more,
        }
    )


def _ref_of(raw: str) -> str | None:
    try:
        data = orjson.loads(raw)
    except ValueError:
        return None
    ref = data.get("ref") if isinstance(data, dict) else None
    return ref if isinstance(ref, str) and len(ref) <= 64 else None


async def _send(app: web.Application, principal: Principal, message: dict[str, Any]) -> Any:
    """The same code path as POST /v1/messages (gateway.sending.send_message)."""
    try:
        body = SendMessageBody.model_validate(message)
    except ValidationError as exc:
        raise Invalid(
            "the request body is invalid",
            code="invalid_body",
            details={"fields": validation_details(exc)},
        ) from None
    view = await send_message(app, principal, body)
    return view.model_dump(mode="json")


async def _require_member(app: web.Application, group_id: str, user_id: str) -> dict[str, str]:
    members = await group_members(app[REDIS], app[KEYS], group_id)
    if not members or user_id not in members:
        raise NotFound("no such group", code="group_not_found")
    return members


async def _read(
    app: web.Application, reader_id: str, kind: str, target: str, seq: int, *, wait_reply: bool
) -> WatermarkView | None:
    if kind == "group":
        await _require_member(app, target, reader_id)
        return await _advance(
            app, reader_id, "group", target, target, "read", seq, wait_reply=wait_reply
        )
    if target == reader_id:
        raise Invalid("a conversation is with another user", code="invalid_conversation")
    if not await user_exists(app[REDIS], app[KEYS], target):
        raise NotFound("no such user", code="user_not_found")
    return await _advance(
        app, reader_id, "user", reader_id, target, "read", seq, wait_reply=wait_reply
    )


async def _advance(
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
    errors=(404,),
)
async def read_direct(request: web.Request, principal: Principal, body: ReadBody) -> Any:
    peer = request.match_info["user_id"]
    return await _read(request.app, principal.user_id, "user", peer, body.seq, wait_reply=True)


@routes.post(
    "/v1/conversations/groups/{group_id}/read",
    body=ReadBody,
    response=WatermarkView,
    summary="Mark a group conversation read up to a seq (of the group's log)",
    errors=(404,),
)
async def read_group(request: web.Request, principal: Principal, body: ReadBody) -> Any:
    group_id = request.match_info["group_id"]
    return await _read(request.app, principal.user_id, "group", group_id, body.seq, wait_reply=True)


async def find_message(app: web.Application, message_id: str) -> tuple[str, str, int, str] | None:
    """(receiver_kind, receiver_id, seq, sender_id) of a message, or None."""
    ref = await app[REDIS].get(app[KEYS].message_ref(message_id))
    if ref:
        kind, receiver_id, seq, sender_id = ref.split("|", 3)
        return kind, receiver_id, int(seq), sender_id
    for collection in app[MONGO].collections("messages"):
        doc = await collection.find_one({"_id": message_id})
        if doc is not None:
            return (
                str(doc.get("receiver_kind", "user")),
                str(doc["receiver_id"]),
                int(doc["seq"]),
                str(doc["sender_id"]),
            )
    return None


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
    summary="Whether a user is online, or when it was last seen",
)
async def presence(request: web.Request, principal: Principal) -> PresenceView:
    user_id = request.match_info["user_id"]
    if len(user_id) > 64:
        raise NotFound("no such user", code="user_not_found")
    redis, keys = request.app[REDIS], request.app[KEYS]
    if user_id != principal.user_id and await mutual_blocks(
        redis, keys, principal.user_id, [user_id]
    ):
        return PresenceView(user_id=user_id, online=False, last_seen=None)
    online, last_seen = await presence_of(redis, keys, user_id)
    return PresenceView(user_id=user_id, online=online, last_seen=None if online else last_seen)


def setup(app: web.Application, settings: GatewaySettings) -> None:
    setup_realtime(app)

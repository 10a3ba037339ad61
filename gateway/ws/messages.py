"""WebSocket frames of the message family: `send` (the same code as POST
/v1/messages, gateway.sending), answered by `sent` or an error frame.

Sends are answered concurrently, at most SENDS_IN_FLIGHT per socket; past that
the socket is not read until one completes (backpressure)."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import ValidationError

from gateway.api import validation_details
from gateway.auth import Principal
from gateway.sending import SendMessageBody, send_message
from gateway.sockets import Connection
from gateway.ws.frames import ClientFrame, FrameHandler, error_frame
from libs.errors import DomainError, Invalid, Unavailable
from libs.logging import get_logger

log = get_logger(__name__)


class SendFrame(ClientFrame):
    type: Literal["send"]
    message: dict[str, Any]


async def on_send(
    app: web.Application, conn: Connection, principal: Principal, frame: SendFrame
) -> None:
    await conn.send_slots().acquire()
    conn.spawn_send(_answer_send(app, conn, principal, frame))


async def _answer_send(
    app: web.Application, conn: Connection, principal: Principal, frame: SendFrame
) -> None:
    try:
        view = await _send(app, principal, frame.message)
        conn.send_frame({"type": "sent", "ref": frame.ref, "message": view})
    except DomainError as error:
        conn.send_frame(error_frame(frame.ref, error))
    except Exception as exc:
        log.warning("send frame failed", error=f"{type(exc).__name__}: {exc}")
        conn.send_frame(error_frame(frame.ref, Unavailable("a dependency is unavailable; retry")))
    finally:
        conn.send_slots().release()


async def _send(app: web.Application, principal: Principal, message: dict[str, Any]) -> Any:
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


FRAMES: dict[str, tuple[type[ClientFrame], FrameHandler]] = {"send": (SendFrame, on_send)}

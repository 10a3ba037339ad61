"""The gateway's WebSocket frames: one table from a client frame's `type` to its
model and handler, built from a module per frame family:

| module | client frames | what it owns |
| --- | --- | --- |
| gateway/ws/messages.py | send | sending over the socket (answer `sent`) |
| gateway/ws/receipts.py | ack, read | watermark moves (also behind POST .../read) |
| gateway/ws/presence.py | typing | typing, and presence at socket open/close |
| gateway/ws/sync.py | resume | replaying the seq logs after a reconnect |

Server frames pushed to sockets (message, message_edited, message_deleted,
reaction, conversation_updated, receipt, typing, presence, group) come from
delivery_service and gateway.push; docs/realtime.md lists every frame. A new
frame family is a new module with a FRAMES table, added to FAMILIES here.

`dispatch` validates one text frame against the union of the table's models
(pydantic, discriminated by `type`) and runs its handler; a bad frame or a
refused one is answered with an error frame and the socket stays open.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from aiohttp import web
from pydantic import Field, TypeAdapter, ValidationError

from gateway.api import validation_details
from gateway.auth import Principal
from gateway.sockets import Connection
from gateway.ws import messages, presence, receipts, sync
from gateway.ws.frames import ClientFrame, FrameHandler, error_frame, ref_of
from libs.errors import DomainError, Invalid, Unavailable
from libs.logging import get_logger

log = get_logger(__name__)

FAMILIES = (messages, receipts, presence, sync)
HANDLERS: dict[str, tuple[type[ClientFrame], FrameHandler]] = {
    name: entry for family in FAMILIES for name, entry in family.FRAMES.items()
}
_MODELS = tuple(model for model, _ in HANDLERS.values())
CLIENT_FRAME: TypeAdapter[Any] = TypeAdapter(
    Annotated[Union[_MODELS], Field(discriminator="type")]  # noqa: UP007 - runtime union
)


async def dispatch(app: web.Application, conn: Connection, principal: Principal, raw: str) -> None:
    """Handle one client text frame (see the module docstring)."""
    ref = None
    try:
        try:
            frame = CLIENT_FRAME.validate_json(raw)
        except ValidationError as exc:
            ref = ref_of(raw)
            details = validation_details(exc)
            if any(d["type"] == "json_invalid" for d in details):
                raise Invalid("the frame is not valid JSON", code="invalid_json") from None
            raise Invalid(
                "the frame is invalid", code="invalid_frame", details={"fields": details}
            ) from None
        ref = frame.ref
        _, handler = HANDLERS[frame.type]
        await handler(app, conn, principal, frame)
    except DomainError as error:
        conn.send_frame(error_frame(ref, error))
    except Exception as exc:  # a dependency is down: tell the client, keep the socket
        log.warning("frame failed", error=f"{type(exc).__name__}: {exc}")
        conn.send_frame(error_frame(ref, Unavailable("a dependency is unavailable; retry")))

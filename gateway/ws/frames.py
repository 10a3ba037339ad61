"""What every WebSocket frame module shares: the base of client frames, the error
frame, and the `FrameHandler` signature the table in gateway/ws/__init__.py holds."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth import Principal
from gateway.sockets import Connection
from libs.errors import DomainError

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
CONVERSATION_PATTERN = r"^(user|group):[A-Za-z0-9_-]{1,64}$"


class ClientFrame(BaseModel):
    """Base of every client frame: unknown fields rejected, an optional `ref` echoed."""

    model_config = ConfigDict(extra="forbid")
    ref: str | None = Field(None, max_length=64)


#: async (app, connection, principal, frame) -> None; raises DomainError to answer
#: with an error frame (the socket stays open).
FrameHandler = Callable[[web.Application, Connection, Principal, Any], Awaitable[None]]


def error_frame(ref: str | None, error: DomainError) -> dict[str, Any]:
    return {"type": "error", "ref": ref, "error": error.as_dict()}


def ref_of(raw: str) -> str | None:
    """The `ref` of a frame that failed validation, if it has a usable one."""
    try:
        data = orjson.loads(raw)
    except ValueError:
        return None
    ref = data.get("ref") if isinstance(data, dict) else None
    return ref if isinstance(ref, str) and len(ref) <= 64 else None

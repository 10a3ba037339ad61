"""History and sync reads at the API's edge: cursors, bounds, and the read model.

Order of a conversation: by position (created_at in ms, then message_id; see
libs.contracts.messages.position). A history page is the `limit` messages
nearest to its cursor in that order, returned newest first; a cursor is the
position of the page's edge plus, per stream of the conversation, the bucket
from which to read on (libs/readmodels/messages.py), so inserts elsewhere never
shift a page: no message is skipped or repeated across pages.

Every read (the recent-messages cache, then bucket lookups) is the message read
model's (libs/readmodels/messages.py); this module encodes and checks cursors.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from gateway.keys import KEYS, MONGO, REDIS
from libs.contracts.messages import MessageView, to_millis
from libs.errors import Invalid
from libs.readmodels.messages import (
    Bound,
    Conversation,
    HistoryPage,
    MessageReader,
    SyncEntry,
    in_range,
    view_position,
)

__all__ = [
    "Bound",
    "Conversation",
    "HistoryPage",
    "Page",
    "in_range",
]

Page = HistoryPage


# -- cursors ------------------------------------------------------------------------


def encode_cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise Invalid("the cursor is not valid", code="invalid_cursor") from None
    if not isinstance(data, dict):
        raise Invalid("the cursor is not valid", code="invalid_cursor")
    return data


def history_cursor(
    conversation: Conversation, message: MessageView, hints: dict[str, int] | None = None
) -> str:
    data: dict[str, Any] = {"c": conversation.id, "p": view_position(message)}
    if hints:
        data["b"] = hints
    return encode_cursor(data)


def cursor_position(conversation: Conversation, cursor: str) -> str:
    return cursor_parts(conversation, cursor)[0]


def cursor_parts(conversation: Conversation, cursor: str) -> tuple[str, dict[str, int]]:
    """(the edge position, per-stream bucket hints) of a history cursor."""
    data = decode_cursor(cursor)
    pos = data.get("p")
    if data.get("c") != conversation.id or not isinstance(pos, str) or not _valid_position(pos):
        raise Invalid("the cursor belongs to another conversation", code="invalid_cursor")
    hints = data.get("b", {})
    if not isinstance(hints, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in hints.items()
    ):
        raise Invalid("the cursor is not valid", code="invalid_cursor")
    return pos, dict(hints)


#: The last millisecond a datetime can hold (9999-12-31T23:59:59.999Z).
MAX_MILLIS = 253_402_300_799_999
#: Seqs are JSON-safe integers (clients hold them as doubles).
MAX_SEQ = 2**53


def _valid_position(pos: str) -> bool:
    return len(pos) > 16 and pos[:15].isdigit() and pos[15] == ":" and int(pos[:15]) <= MAX_MILLIS


def time_position(moment: datetime) -> str:
    """The lowest position at `moment` (ms precision)."""
    return f"{max(0, to_millis(moment)):015d}:"


def tighter_lower(a: Bound | None, b: Bound | None) -> Bound | None:
    if a is None or b is None:
        return a or b
    if a.position != b.position:
        return a if a.position > b.position else b
    return a if not a.inclusive else b


def tighter_upper(a: Bound | None, b: Bound | None) -> Bound | None:
    if a is None or b is None:
        return a or b
    if a.position != b.position:
        return a if a.position < b.position else b
    return a if not a.inclusive else b


def reader(app: web.Application) -> MessageReader:
    return MessageReader(app[MONGO], app[REDIS], app[KEYS])


async def read_history(
    app: web.Application,
    conversation: Conversation,
    *,
    lower: Bound | None,
    upper: Bound | None,
    limit: int,
    ascending: bool,
    hints: dict[str, int] | None = None,
) -> HistoryPage:
    """The `limit` messages of [lower, upper] nearest to the cursor side, newest first."""
    return await reader(app).history(
        conversation, lower=lower, upper=upper, limit=limit, ascending=ascending, hints=hints
    )


# -- sync -----------------------------------------------------------------------------


def decode_sync_cursor(cursor: str | None) -> dict[str, int]:
    if not cursor:
        return {}
    data = decode_cursor(cursor)
    seqs = data.get("s")
    if not isinstance(seqs, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and 0 <= v <= MAX_SEQ for k, v in seqs.items()
    ):
        raise Invalid("the cursor is not valid", code="invalid_cursor")
    return dict(seqs)


def encode_sync_cursor(seqs: dict[str, int]) -> str:
    return encode_cursor({"s": seqs})


async def read_sync(
    app: web.Application,
    receivers: Sequence[str],
    seqs: dict[str, int],
    limit: int,
    *,
    hidden_actors: Iterable[str] = (),
) -> tuple[list[SyncEntry], dict[str, int], bool]:
    """Entries (messages and events) after `seqs` across `receivers`, oldest first;
    the advanced seqs; more? Events of `hidden_actors` are left out, the cursor
    moving past them (MessageReader.sync)."""
    return await reader(app).sync(receivers, seqs, limit, hidden_actors=hidden_actors)

"""History and sync reads: the recent-messages cache first, then MongoDB.

Order of a conversation: by position (created_at in ms, then message_id; see
libs.contracts.messages.position). A history page is the `limit` messages
nearest to its cursor in that order, returned newest first; a cursor is the
position of the page's edge, so inserts elsewhere never shift a page: no
message is skipped or repeated across pages.

The cache (written by message_service before it replies) answers a page only
when it provably covers it: every receiver of the conversation has a coverage
marker ('from:<receiver_id>', the position from which the cache holds all that
receiver's messages of the conversation), and the page lies at or above the
highest marker. Otherwise the page is read from MongoDB (one indexed query per
direction) and merged with the cache's entries in range, so a message accepted
but not yet persisted is still visible (read-your-writes).

Sync walks the caller's inbox and groups by seq: from the per-receiver recent
cache when it holds every seq after the cursor, else from MongoDB, returning per
receiver only a contiguous run of seqs after the cursor, so a message not yet
persisted holds the cursor back instead of being skipped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import Counter
from pymongo import ASCENDING, DESCENDING

from gateway.keys import KEYS, MONGO, REDIS
from libs.contracts.conversations import ConversationEventPayload, EventView
from libs.contracts.messages import (
    MessageView,
    ReceiverKind,
    from_millis,
    position,
    to_millis,
)
from libs.errors import Invalid
from libs.logging import get_logger
from libs.message_views import view_from_document

MESSAGES = "messages"  # the persister's collections
EVENTS = "conversation_events"
log = get_logger(__name__)
HISTORY_ANOMALIES = Counter(
    "messenger_history_anomalies_total",
    "Rows dropped from a history page because they broke its invariants",
    ["kind"],
)


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation and the (receiver_id, sender_id filter) of each of its directions."""

    id: str
    kind: ReceiverKind
    directions: tuple[tuple[str, str | None], ...]

    @classmethod
    def direct(cls, caller_id: str, other_id: str) -> Conversation:
        low, high = sorted((caller_id, other_id))
        directions = ((other_id, caller_id),)
        if other_id != caller_id:
            directions += ((caller_id, other_id),)
        return cls(f"d:{low}:{high}", "user", directions)

    @classmethod
    def group(cls, group_id: str) -> Conversation:
        return cls(f"g:{group_id}", "group", ((group_id, None),))


@dataclass(frozen=True, slots=True)
class Bound:
    """One end of a position range: `inclusive` says whether `position` itself is in."""

    position: str
    inclusive: bool


@dataclass(frozen=True, slots=True)
class Page:
    messages: list[MessageView]
    has_more: bool


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


def history_cursor(conversation: Conversation, message: MessageView) -> str:
    return encode_cursor({"c": conversation.id, "p": position(message.created_at, message.id)})


def cursor_position(conversation: Conversation, cursor: str) -> str:
    data = decode_cursor(cursor)
    pos = data.get("p")
    if data.get("c") != conversation.id or not isinstance(pos, str) or not _valid_position(pos):
        raise Invalid("the cursor belongs to another conversation", code="invalid_cursor")
    return pos


def _valid_position(pos: str) -> bool:
    return len(pos) > 16 and pos[:15].isdigit() and pos[15] == ":"


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


def _in_range(pos: str, lower: Bound | None, upper: Bound | None) -> bool:
    if lower is not None and (
        pos < lower.position or (pos == lower.position and not lower.inclusive)
    ):
        return False
    return not (
        upper is not None
        and (pos > upper.position or (pos == upper.position and not upper.inclusive))
    )


# -- history ------------------------------------------------------------------------


def _view(raw: str | bytes) -> MessageView:
    return MessageView.model_validate_json(raw)


def _view_from_document(doc: dict[str, Any]) -> MessageView:
    return view_from_document(doc)


def _entry(raw: str | bytes) -> MessageView | EventView:
    """An entry of the per-receiver sync cache: an event (it has a `type`) or a message."""
    data = orjson.loads(raw)
    if "type" in data:
        return EventView.model_validate(data)
    return MessageView.model_validate(data)


def _event_from_document(doc: dict[str, Any]) -> EventView:
    return EventView.of(ConversationEventPayload.model_validate(doc["event"]))


def _pos(message: MessageView | EventView) -> str:
    return position(message.created_at, message.id)


def _receiver_of(entry: MessageView | EventView) -> str:
    return entry.receiver.id if isinstance(entry, MessageView) else entry.receiver["id"]


def _lex(bound: Bound | None, *, lower: bool) -> str:
    if bound is None:
        return "-" if lower else "+"
    return ("[" if bound.inclusive else "(") + bound.position


def _mongo_bound(bound: Bound, *, lower: bool) -> dict[str, Any]:
    millis, message_id = int(bound.position[:15]), bound.position[16:]
    moment = from_millis(millis)
    if lower:
        tie = {"$gte" if bound.inclusive else "$gt": message_id}
        return {"$or": [{"created_at": {"$gt": moment}}, {"created_at": moment, "_id": tie}]}
    tie = {"$lte" if bound.inclusive else "$lt": message_id}
    return {"$or": [{"created_at": {"$lt": moment}}, {"created_at": moment, "_id": tie}]}


async def read_history(
    app: web.Application,
    conversation: Conversation,
    *,
    lower: Bound | None,
    upper: Bound | None,
    limit: int,
    ascending: bool,
) -> Page:
    """The `limit` messages of [lower, upper] nearest to the cursor side, newest first.

    `ascending=False` (before/default): the newest ones below `upper`.
    `ascending=True` (after): the oldest ones above `lower`.
    """
    redis, keys = app[REDIS], app[KEYS]
    zset, bodies = keys.recent_messages(conversation.id), keys.recent_bodies(conversation.id)
    markers = [f"from:{receiver}" for receiver, _ in conversation.directions]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.exists(zset)
        pipe.hmget(bodies, markers)
        if ascending:
            pipe.zrangebylex(zset, _lex(lower, lower=True), _lex(upper, lower=False), 0, limit + 1)
        else:
            pipe.zrevrangebylex(
                zset, _lex(upper, lower=False), _lex(lower, lower=True), 0, limit + 1
            )
        exists, marker_values, positions = await pipe.execute()
    cached: list[MessageView] = []
    if positions:
        raw_bodies = await redis.hmget(bodies, positions)
        cached = _unique(_view(raw) for raw in raw_bodies if raw is not None)

    covered_from = max(marker_values) if exists and marker_values and all(marker_values) else None
    if covered_from is not None:
        start = lower.position if lower is not None else None
        if ascending:
            covered = start is not None and start >= covered_from
        else:
            inside = sum(1 for m in cached if _pos(m) >= covered_from)
            covered = inside >= limit + 1 or (start is not None and start >= covered_from)
        if covered and len(cached) == len(positions):
            return _page(cached, limit, ascending)

    found = await asyncio.gather(
        *(
            _read_direction(app, receiver, sender, lower, upper, limit + 1, ascending)
            for receiver, sender in conversation.directions
        )
    )
    merged = {m.id: m for m in cached if _in_range(_pos(m), lower, upper)}
    for documents in found:
        for message in documents:
            # The range is checked here too: a row outside it would repeat across pages.
            if _in_range(_pos(message), lower, upper):
                merged.setdefault(message.id, message)
            else:
                _anomaly("storage row outside the range", message)
            previous = merged.get(message.id)
            if previous is not None and _pos(previous) != _pos(message):
                _anomaly("cache and storage disagree on the position", message)
    return _page(list(merged.values()), limit, ascending)


def _unique(messages: Iterable[MessageView]) -> list[MessageView]:
    """One entry per message id (the cache is keyed by position, not by id)."""
    seen: set[str] = set()
    unique: list[MessageView] = []
    for message in messages:
        if message.id in seen:
            _anomaly("message cached at two positions", message)
            continue
        seen.add(message.id)
        unique.append(message)
    return unique


def _anomaly(kind: str, message: MessageView) -> None:
    HISTORY_ANOMALIES.labels(kind).inc()
    log.warning("history anomaly", kind=kind, message_id=message.id, position=_pos(message))


def _page(messages: Sequence[MessageView], limit: int, ascending: bool) -> Page:
    ordered = sorted(messages, key=_pos, reverse=not ascending)
    page = ordered[:limit]
    if ascending:
        page.reverse()
    return Page(page, has_more=len(ordered) > limit)


async def _read_direction(
    app: web.Application,
    receiver_id: str,
    sender_id: str | None,
    lower: Bound | None,
    upper: Bound | None,
    limit: int,
    ascending: bool,
) -> list[MessageView]:
    """One indexed query: (receiver_id[, sender_id], created_at, _id) in range."""
    clauses: list[dict[str, Any]] = [{"receiver_id": receiver_id}]
    if sender_id is not None:
        clauses.append({"sender_id": sender_id})
    if lower is not None:
        clauses.append(_mongo_bound(lower, lower=True))
    if upper is not None:
        clauses.append(_mongo_bound(upper, lower=False))
    direction = ASCENDING if ascending else DESCENDING
    collection = app[MONGO].collection_for(receiver_id, MESSAGES)
    cursor = (
        collection.find({"$and": clauses})
        .sort([("created_at", direction), ("_id", direction)])
        .limit(limit)
    )
    return [_view_from_document(doc) async for doc in cursor]


# -- sync -----------------------------------------------------------------------------


def decode_sync_cursor(cursor: str | None) -> dict[str, int]:
    if not cursor:
        return {}
    data = decode_cursor(cursor)
    seqs = data.get("s")
    if not isinstance(seqs, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in seqs.items()
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
) -> tuple[list[MessageView | EventView], dict[str, int], bool]:
    """Entries (messages and events) after `seqs` across `receivers`, oldest first;
    the advanced seqs; more?

    Per receiver, the recent-inbox cache answers when it holds every seq after the
    cursor (contiguous and starting at or before cursor + 1); otherwise MongoDB.
    Events of an actor in `hidden_actors` (those the caller blocks) are left out,
    but the cursor moves past them, so the log stays gap-free.
    """
    redis, keys = app[REDIS], app[KEYS]
    async with redis.pipeline(transaction=False) as pipe:
        for receiver_id in receivers:
            key = keys.recent_inbox(receiver_id)
            pipe.zcard(key)
            pipe.zrange(key, 0, 0, withscores=True)
            pipe.zrange(key, -1, -1, withscores=True)
            pipe.zrangebyscore(key, f"({seqs.get(receiver_id, 0)}", "+inf", 0, limit + 1)
        raw = await pipe.execute()

    async def one(index: int, receiver_id: str) -> tuple[list[MessageView | EventView], bool]:
        after = seqs.get(receiver_id, 0)
        size, lowest, highest, entries = raw[4 * index : 4 * index + 4]
        if size and lowest and highest:
            low, high = int(lowest[0][1]), int(highest[0][1])
            if high - low + 1 == size and low <= after + 1:
                run = [_entry(entry) for entry in entries]
                return run[:limit], len(run) > limit
        return await _sync_from_mongo(app, receiver_id, after, limit)

    results = await asyncio.gather(*(one(i, r) for i, r in enumerate(receivers)))
    candidates = [m for run, _ in results for m in run]
    candidates.sort(key=_pos)
    page = candidates[:limit]
    more = len(candidates) > limit or any(more for _, more in results)
    advanced = dict(seqs)
    for entry in page:
        receiver_id = _receiver_of(entry)
        advanced[receiver_id] = max(advanced.get(receiver_id, 0), entry.seq)
    hidden = set(hidden_actors)
    if hidden:
        page = [e for e in page if not (isinstance(e, EventView) and e.actor_id in hidden)]
    return page, advanced, more


async def _sync_from_mongo(
    app: web.Application, receiver_id: str, after: int, limit: int
) -> tuple[list[MessageView | EventView], bool]:
    """The contiguous run of persisted seqs after `after` (a gap = not yet persisted),
    from the messages and the events of the receiver's log."""
    messages = app[MONGO].collection_for(receiver_id, MESSAGES)
    events = app[MONGO].collection_for(receiver_id, EVENTS)
    query = {"receiver_id": receiver_id, "seq": {"$gt": after}}
    found_messages, found_events = await asyncio.gather(
        messages.find(query).sort("seq", ASCENDING).limit(limit + 1).to_list(None),
        events.find(query).sort("seq", ASCENDING).limit(limit + 1).to_list(None),
    )
    entries: list[tuple[int, MessageView | EventView]] = [
        (int(doc["seq"]), _view_from_document(doc)) for doc in found_messages
    ]
    entries += [(int(doc["seq"]), _event_from_document(doc)) for doc in found_events]
    entries.sort(key=lambda pair: pair[0])
    run: list[MessageView | EventView] = []
    for seq, entry in entries:
        if seq != after + len(run) + 1:
            return run[:limit], False  # the next seq is not persisted yet: stop here
        run.append(entry)
    return run[:limit], len(run) > limit

"""Unit tests of one socket's send-side rules (gateway/sockets.py Connection):
the bounded queue, duplicate drops by message id, resume hold/release, typing
throttle. The WebSocket itself is exercised end to end in the other modules."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from gateway.sockets import Connection


def connection(queue_size: int = 8) -> Connection:
    return Connection("u1", "hash", web.WebSocketResponse(), asyncio.Queue(maxsize=queue_size))


def message(message_id: str, seq: int, receiver: str = "u1") -> dict:
    return {
        "type": "message",
        "message": {"id": message_id, "seq": seq, "receiver": {"kind": "user", "id": receiver}},
    }


def queued_ids(conn: Connection) -> list[str]:
    frames = []
    while not conn.queue.empty():
        frames.append(orjson.loads(conn.queue.get_nowait()))
    return [f["message"]["id"] for f in frames if f["type"] == "message"]


def push(conn: Connection, frame: dict) -> bool:
    return conn.push(frame, orjson.dumps(frame).decode())


async def test_full_queue_reports_a_slow_consumer() -> None:
    conn = connection(queue_size=2)
    assert push(conn, message("a", 1))
    assert push(conn, message("b", 2))
    assert not push(conn, message("c", 3))


async def test_duplicate_message_ids_are_dropped() -> None:
    conn = connection()
    assert push(conn, message("a", 1))
    assert push(conn, message("a", 1))  # a replayed push: accepted, not queued
    assert push(conn, {"type": "typing", "user_id": "u2", "conversation": "user:u2"})
    assert queued_ids(conn) == ["a"]
    assert conn.seen == {"u1": 1}


async def test_resume_holds_live_pushes_and_releases_them_without_duplicates() -> None:
    conn = connection()
    assert push(conn, message("live-before", 5))
    conn.held = []
    assert push(conn, message("live-during", 7))  # held, not queued yet
    for message_id, seq in (
        ("m3", 3),
        ("m4", 4),
        ("live-before", 5),
        ("m6", 6),
        ("live-during", 7),
    ):
        conn.replay(message(message_id, seq)["message"])
    assert conn.release()
    assert queued_ids(conn) == ["live-before", "m3", "m4", "m6", "live-during"]
    assert conn.held is None
    assert conn.seen == {"u1": 7}


async def test_typing_is_throttled_per_conversation() -> None:
    conn = connection()
    assert conn.typing_allowed("user:u2", now=100.0)
    assert not conn.typing_allowed("user:u2", now=100.5)
    assert conn.typing_allowed("group:g1", now=100.5)
    assert conn.typing_allowed("user:u2", now=101.1)

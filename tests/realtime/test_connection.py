"""Unit tests of one socket's send-side rules (gateway/sockets.py Connection):
the bounded queue, duplicate drops by message id, resume hold/release, typing
throttle. The WebSocket itself is exercised end to end in the other modules."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from gateway.sockets import Connection, SocketHub


def connection(queue_size: int = 8) -> Connection:
    return Connection("u1", "hash", web.WebSocketResponse(), queue_size)


def message(message_id: str, seq: int, receiver: str = "u1") -> dict:
    return {
        "type": "message",
        "message": {"id": message_id, "seq": seq, "receiver": {"kind": "user", "id": receiver}},
    }


def queued_ids(conn: Connection) -> list[str]:
    frames = [orjson.loads(text) for text in conn.queued or ()]
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


class _RecordingSocket:
    closed = False

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_str(self, text: str) -> None:
        await asyncio.sleep(0)  # a write that yields, as a real one may
        self.sent.append(text)


async def test_an_idle_socket_holds_no_queue_and_no_writer_task() -> None:
    ws = _RecordingSocket()
    conn = Connection("u1", "hash", ws, 8)  # type: ignore[arg-type]
    conn.writable = True
    conn.start_writing()
    assert conn.queued is None
    assert conn.writer is None
    for n in range(3):
        assert conn.offer(f"f{n}")
    writer = conn.writer
    assert writer is not None
    assert conn.offer("f3")  # while the writer runs: the same writer takes it
    assert conn.writer is writer
    await writer
    assert ws.sent == ["f0", "f1", "f2", "f3"]  # in order, then the task ends
    assert conn.writer is None  # ... and is let go, and so is the empty queue
    assert conn.queued is None
    assert (conn.recent_ids, conn.sends, conn.send_tasks) == (None, None, None)
    assert conn.offer("f4")  # the next frame starts another writer
    assert conn.writer is not writer
    await conn.writer
    assert ws.sent[-1] == "f4"


async def test_frames_offered_before_the_socket_is_writable_wait_for_it() -> None:
    ws = _RecordingSocket()
    conn = Connection("u1", "hash", ws, 8)  # type: ignore[arg-type]
    assert conn.offer("early")
    assert conn.writer is None
    assert list(conn.queued or ()) == ["early"]
    conn.writable = True
    conn.start_writing()
    assert conn.writer is not None
    await conn.writer
    assert ws.sent == ["early"]


class _InstantSocket(_RecordingSocket):
    """A socket whose writes complete at once (an uncompressed frame, empty buffer)."""

    def __init__(self, compress: int = 0) -> None:
        super().__init__()
        self.compress = compress

    async def send_str(self, text: str) -> None:
        self.sent.append(text)


class _Transport:
    def __init__(self, buffered: int = 0) -> None:
        self.buffered = buffered

    def get_write_buffer_size(self) -> int:
        return self.buffered


def writable(ws: object, transport: _Transport | None) -> Connection:
    conn = Connection("u1", "hash", ws, 8)  # type: ignore[arg-type]
    conn.transport = transport  # type: ignore[assignment]
    conn.writable = True
    return conn


async def test_deferred_frames_are_written_inline_when_the_transport_takes_them() -> None:
    ws = _InstantSocket()
    conn = writable(ws, _Transport(buffered=0))
    assert conn.push(message("a", 1), orjson.dumps(message("a", 1)).decode(), defer=True)
    assert conn.offer("f2", defer=True)
    assert conn.writer is None  # deferred: nothing written yet
    assert ws.sent == []
    await conn.write_queued()
    assert [orjson.loads(t).get("type", t) for t in ws.sent[:1]] == ["message"]
    assert ws.sent[1:] == ["f2"]
    assert conn.writer is None  # no task was made for it
    assert conn.queued is None  # and the emptied queue is let go


async def test_a_busy_or_compressed_socket_gets_a_writer_task_instead() -> None:
    for ws, transport in (
        (_InstantSocket(), _Transport(buffered=4096)),  # a slow reader's data waits
        (_InstantSocket(compress=15), _Transport()),  # permessage-deflate negotiated
        (_InstantSocket(), None),
    ):
        conn = writable(ws, transport)
        assert conn.offer("f1", defer=True)
        await conn.write_queued()
        assert ws.sent == []
        assert conn.writer is not None
        await conn.writer
        assert ws.sent == ["f1"]


async def test_frames_stay_in_order_when_a_writer_task_already_runs() -> None:
    ws = _RecordingSocket()  # each write yields
    conn = writable(ws, _Transport())
    ws.compress = 0  # type: ignore[attr-defined]
    assert conn.offer("f1")  # not deferred: a writer task starts
    writer = conn.writer
    assert writer is not None
    assert conn.offer("f2", defer=True)
    await conn.write_queued()  # the running writer owns the socket: it writes nothing
    assert conn.writer is writer
    await writer
    assert ws.sent == ["f1", "f2"]


async def test_a_failing_socket_does_not_stop_the_others() -> None:
    class Broken(_InstantSocket):
        async def send_str(self, text: str) -> None:
            raise ValueError("broken")

        async def close(self, code: int = 1000, message: bytes = b"") -> None:
            self.closed = True

    hub = SocketHub.__new__(SocketHub)
    hub._delivered = []
    hub._tasks = set()
    broken, fine = Broken(), _InstantSocket()
    for ws in (broken, fine):
        conn = writable(ws, _Transport())
        assert conn.offer("f1", defer=True)
        hub._delivered.append(conn)
    await hub.write_delivered()
    assert fine.sent == ["f1"]
    await asyncio.gather(*hub._tasks)
    assert broken.closed

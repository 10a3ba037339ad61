"""The WebSockets this gateway process holds, and their registry entries in Redis.

`SocketHub` owns every open socket of the process (user -> connections). Each
`Connection` has a bounded send queue (it exists only while frames wait): a
client too slow to keep up (its queue full) is closed with code 4008 ("slow
consumer"), never buffered without bound. Pushed frames are written by the push
listener itself while a socket's transport takes them at once
(`SocketHub.write_delivered`); other frames, and a socket that is compressed or
has data waiting, are written by one writer task at a time that ends when the
queue is empty. The hub
also keeps the session registry (`conns:<user>`, see libs/push.py) true for this
instance: it writes an entry at connect, refreshes every entry on each
heartbeat, and removes it at close.
Registrations (and removals) made while one is in flight go together in the
next pipeline (`Coalesced`): a storm of N connects or disconnects (a gateway
restart, a network blip) costs one pooled Redis connection and a few round
trips, not N connections, which the pool could not give within its wait.

Close codes the server uses (documented in docs/realtime.md):
- 1001 going away (gateway shutdown), 1009 frame too large,
- 4001 session revoked or expired, 4008 slow consumer (send queue full), 4029 too
  many connections of this user (the cap is claimed atomically in the registry).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSCloseCode, web
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis

from gateway.auth import Principal
from gateway.settings import RealtimeSettings
from libs.contracts.keys import RedisKeys
from libs.ids import new_id
from libs.logging import get_logger
from libs.push import CLAIM_CONNECTION_LUA, CONNECTION_TTL_S, live_routes, route_value

log = get_logger(__name__)

CLOSE_SESSION_REVOKED = 4001
CLOSE_SLOW_CONSUMER = 4008
#: The user already has GATEWAY_WS_MAX_CONNECTIONS_PER_USER sockets (a handshake that
#: raced past the 429 check and lost the atomic claim in the registry).
CLOSE_TOO_MANY_CONNECTIONS = 4029
#: Message ids remembered per socket to drop duplicates.
RECENT_IDS_KEPT = 4096
TYPING_INTERVAL_S = 1.0
CLOSE_TIMEOUT_S = 5.0
SENDS_IN_FLIGHT = 64
#: Sockets the push listener writes before it lets the event loop run other work.
WRITES_PER_TURN = 128

OPEN_SOCKETS = Gauge("messenger_ws_open_sockets", "WebSockets open on this gateway")
FRAMES_PUSHED = Counter("messenger_ws_frames_pushed_total", "Frames queued to sockets")
SLOW_CLOSED = Counter("messenger_ws_slow_consumers_total", "Sockets closed as too slow")


#: Frames that carry an entry of a seq log (deduped per socket, held during a resume).
LOG_FRAME_KEYS = {
    "message": "message",
    "message_edited": "event",
    "message_deleted": "event",
    "reaction": "event",
    "conversation_updated": "event",
}


def log_entry(frame: dict[str, Any]) -> dict[str, Any] | None:
    """The log entry (id, receiver, seq) a frame carries, if any."""
    key = LOG_FRAME_KEYS.get(frame.get("type", ""))
    return frame.get(key) if key is not None else None


@dataclass(eq=False, slots=True)
class Connection:
    """One open socket of one user, with its bounded send queue.

    An idle socket holds no queue and no writer task: the queue is made by a
    frame and dropped once written, and a writer task runs only while frames are
    waiting (then ends, and is let go). With tens of thousands of idle sockets per
    gateway, an asyncio.Queue and a parked task each were ~4.4 KB per socket
    (docs/performance.md); for the same reason the containers a socket may never
    need (dedupe ids, sends in flight, typing times) are made on first use.
    """

    user_id: str
    token_hash: str
    ws: web.WebSocketResponse
    #: Most frames waiting to be written; one more means the client is too slow.
    max_queued: int
    #: The session's absolute expiry (unix seconds): the socket closes then.
    expires_at: float = math.inf
    id: str = field(default_factory=new_id)
    #: Frames waiting to be written, oldest first (None while none waits).
    queued: deque[str] | None = None
    #: Set when the socket is open for writing (SocketHub.open): from then on a
    #: frame starts a writer task when none runs. Frames offered before wait.
    writable: bool = False
    writer: asyncio.Task[None] | None = None
    #: Set while `write_queued` writes this socket's frames from the push listener.
    flushing: bool = False
    closing: bool = False
    transport: asyncio.BaseTransport | None = None
    #: Ids of the latest log entries (messages, events) written to this socket
    #: (bounded): one seen again is a duplicate (a replayed push, or a resume's seam).
    recent_ids: OrderedDict[str, None] | None = None
    #: receiver_id -> highest seq written to this socket (what `resumed` reports).
    seen: dict[str, int] = field(default_factory=dict)
    #: While a resume replays missed messages, live message frames wait here.
    held: list[tuple[dict[str, Any], str]] | None = None
    #: Sends in flight on this socket (each awaits message_service's reply): at most
    #: SENDS_IN_FLIGHT (`send_slots`).
    sends: asyncio.Semaphore | None = None
    send_tasks: set[asyncio.Task[None]] | None = None
    #: conversation -> monotonic time of the last typing frame forwarded.
    typing_at: dict[str, float] | None = None

    def send_slots(self) -> asyncio.Semaphore:
        if self.sends is None:
            self.sends = asyncio.Semaphore(SENDS_IN_FLIGHT)
        return self.sends

    def spawn_send(self, coro: Coroutine[Any, Any, None]) -> None:
        if self.send_tasks is None:
            self.send_tasks = set()
        task = asyncio.create_task(coro)
        self.send_tasks.add(task)
        task.add_done_callback(self.send_tasks.discard)

    def typing_allowed(self, conversation: str, now: float) -> bool:
        """At most one typing frame per conversation per TYPING_INTERVAL_S is forwarded."""
        if self.typing_at is None:
            self.typing_at = {}
        if now - self.typing_at.get(conversation, float("-inf")) < TYPING_INTERVAL_S:
            return False
        if len(self.typing_at) > 1000:
            self.typing_at.clear()
        self.typing_at[conversation] = now
        return True

    def push(self, frame: dict[str, Any], text: str, *, defer: bool = False) -> bool:
        """Queue a pushed frame, dropping duplicate log entries; False when too slow.
        `defer`: start no writer; the caller calls `write_queued` soon."""
        entry = log_entry(frame)
        if entry is not None:
            if self.held is not None:
                self.held.append((frame, text))
                return True
            if not self._first_sight(entry):
                return True
        return self.offer(text, defer=defer)

    def _first_sight(self, entry: dict[str, Any]) -> bool:
        entry_id = entry["id"]
        if self.recent_ids is None:
            self.recent_ids = OrderedDict()
        elif entry_id in self.recent_ids:
            return False
        self.recent_ids[entry_id] = None
        if len(self.recent_ids) > RECENT_IDS_KEPT:
            self.recent_ids.popitem(last=False)
        receiver_id = entry["receiver"]["id"]
        self.seen[receiver_id] = max(self.seen.get(receiver_id, 0), int(entry["seq"]))
        return True

    def replay(self, message: dict[str, Any]) -> bool:
        """Queue a missed message during a resume (deduped like live ones)."""
        if not self._first_sight(message):
            return True
        return self.send_frame({"type": "message", "message": message})

    def replay_frame(self, frame: dict[str, Any]) -> bool:
        """Queue a missed log entry's frame (message or event) during a resume."""
        entry = log_entry(frame)
        if entry is not None and not self._first_sight(entry):
            return True
        return self.send_frame(frame)

    def release(self) -> bool:
        """End a resume: queue the live frames held meanwhile that were not replayed."""
        held, self.held = self.held or [], None
        return all(self.push(frame, text) for frame, text in held)

    def offer(self, text: str, *, defer: bool = False) -> bool:
        """Queue a frame; False when the queue is full (the client is too slow).
        `defer`: start no writer; the caller calls `write_queued` soon."""
        if self.closing:
            return True
        if self.queued is None:
            self.queued = deque()
        elif len(self.queued) >= self.max_queued:
            return False
        self.queued.append(text)
        if not defer:
            self.start_writing()
        return True

    @property
    def writer_running(self) -> bool:
        return self.writer is not None and not self.writer.done()

    def start_writing(self) -> None:
        """Run a writer task if frames wait and none runs (the socket is writable)."""
        if self.writable and self.queued and not self.flushing and not self.writer_running:
            self.writer = asyncio.create_task(self.drain(), name=f"ws-writer:{self.id}")

    async def write_queued(self) -> None:
        """Write the waiting frames from the calling task while the transport takes
        them at once, and leave the rest (if any) to a writer task.

        A push reaches hundreds of sockets at once; a task per socket per burst was a
        quarter of the gateway's CPU in a group fan-out (docs/performance.md). An
        uncompressed frame written to a transport with an empty buffer does not wait
        (aiohttp waits only when the transport is paused), so the push listener
        writes it inline. A compressed socket, or one whose buffer holds data (a slow
        reader), gets its own writer task, so no socket holds the others up.
        """
        if not self.writable or self.flushing or self.writer_running:
            return
        self.flushing = True
        try:
            while self.queued and not self.ws.closed and self._takes_frames_now():
                await self.ws.send_str(self.queued.popleft())
        except (ConnectionError, RuntimeError):
            return
        finally:
            self.flushing = False
        if not self.queued:
            self.queued = None
        self.start_writing()

    def _takes_frames_now(self) -> bool:
        if self.transport is None or self.ws.compress:
            return False
        # uvloop's transports have the method without subclassing WriteTransport.
        buffered = getattr(self.transport, "get_write_buffer_size", None)
        return buffered is not None and buffered() == 0

    def send_frame(self, frame: dict[str, Any]) -> bool:
        return self.offer(orjson.dumps(frame).decode())

    async def close(self, code: int, message: str) -> None:
        """Close with `code`; a peer that does not take the close frame (it stopped
        reading) within CLOSE_TIMEOUT_S has its TCP connection aborted."""
        if self.closing:
            return
        self.closing = True
        try:
            await asyncio.wait_for(
                self.ws.close(code=code, message=message.encode()), CLOSE_TIMEOUT_S
            )
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()
        except Exception:  # the peer is gone already
            pass

    async def drain(self) -> None:
        """The writer task: send the queued frames in order, then end (the next frame
        starts another); or stop when the socket closes. Its ending lets the queue
        (when empty) and the task itself go."""
        try:
            while self.queued and not self.ws.closed:
                await self.ws.send_str(self.queued.popleft())
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return
        finally:
            if self.writer is asyncio.current_task():
                self.writer = None
            if not self.queued:
                self.queued = None


#: Most registrations (or removals) in one pipeline.
REGISTRY_BATCH_MAX = 500


class Coalesced:
    """One registry operation over many connections: each call waits for the next
    pipeline, which carries every call made meanwhile. `run` maps a batch of
    connections to one answer each."""

    def __init__(self, run: Callable[[list[Connection]], Awaitable[list[Any]]]) -> None:
        self._run = run
        self._waiting: list[tuple[Connection, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def __call__(self, conn: Connection) -> Any:
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((conn, answer))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await answer

    async def _flush(self) -> None:
        while self._waiting:
            batch = self._waiting[:REGISTRY_BATCH_MAX]
            del self._waiting[:REGISTRY_BATCH_MAX]
            try:
                answers = await self._run([conn for conn, _ in batch])
            except Exception as exc:
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            for (_, answer), value in zip(batch, answers, strict=True):
                if not answer.done():
                    answer.set_result(value)


class SocketHub:
    """Every socket of this gateway process, by user, and their registry entries."""

    def __init__(
        self, redis: Redis, keys: RedisKeys, instance_id: str, settings: RealtimeSettings
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.instance_id = instance_id
        self.settings = settings
        self.by_user: dict[str, dict[str, Connection]] = defaultdict(dict)
        #: Sockets `deliver` queued frames to, for `write_queued`.
        self._delivered: list[Connection] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._claim = redis.register_script(CLAIM_CONNECTION_LUA)
        #: conn -> None when the user is at the cap (nothing written), else True when
        #: the user was offline before this socket.
        self.register = Coalesced(self._register_all)
        self.unregister = Coalesced(self._unregister_all)

    def connections(self) -> list[Connection]:
        return [c for conns in self.by_user.values() for c in conns.values()]

    def open(
        self,
        principal: Principal,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None = None,
    ) -> Connection:
        user_id = principal.user_id
        conn = Connection(
            user_id,
            principal.token_hash,
            ws,
            self.settings.send_queue_frames,
            expires_at=principal.expires_at,
        )
        conn.transport = transport
        conn.writable = True
        conn.start_writing()
        self.by_user[user_id][conn.id] = conn
        OPEN_SOCKETS.inc()
        return conn

    async def discard(self, conn: Connection) -> None:
        conns = self.by_user.get(conn.user_id)
        if conns is not None and conns.pop(conn.id, None) is not None:
            OPEN_SOCKETS.dec()
            if not conns:
                self.by_user.pop(conn.user_id, None)
        writer = conn.writer
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    def deliver(self, user_ids: Iterable[str], frame: dict[str, Any]) -> int:
        """Queue `frame` to every local socket of `user_ids`; closes slow ones.
        The frames are written by the next `write_delivered`."""
        text: str | None = None
        sent = 0
        for user_id in user_ids:
            for conn in list(self.by_user.get(user_id, {}).values()):
                if text is None:
                    text = orjson.dumps(frame).decode()
                if conn.push(frame, text, defer=True):
                    self._delivered.append(conn)
                    sent += 1
                else:
                    SLOW_CLOSED.inc()
                    log.warning("slow consumer closed", user_id=user_id, connection=conn.id)
                    self.spawn(conn.close(CLOSE_SLOW_CONSUMER, "slow consumer"))
        FRAMES_PUSHED.inc(sent)
        return sent

    async def write_delivered(self) -> None:
        """Write what `deliver` queued (Connection.write_queued, socket by socket),
        letting other work of the event loop run every WRITES_PER_TURN sockets: a
        frame to 10,000 members must not hold a request up for its whole fan-out."""
        conns, self._delivered = self._delivered, []
        for index, conn in enumerate(conns, 1):
            try:
                await conn.write_queued()
            except Exception as exc:  # one socket's fault must not stop the listener
                log.warning(
                    "push write failed", connection=conn.id, error=f"{type(exc).__name__}: {exc}"
                )
                self.spawn(conn.close(WSCloseCode.INTERNAL_ERROR, "write failed"))
            if index % WRITES_PER_TURN == 0:
                await asyncio.sleep(0)

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the registry in Redis -------------------------------------------------------

    async def live_connection_count(self, user_id: str) -> int:
        fields = await self.redis.hgetall(self.keys.user_connections(user_id))
        return len(live_routes(fields))

    async def _register_all(self, conns: list[Connection]) -> list[bool | None]:
        """Claim each socket's entry under the per-user cap; for each, None when refused,
        else True when its user was offline before it (in order: a second socket of one
        user in the batch sees the first)."""
        value = route_value(self.instance_id)
        cap = self.settings.max_connections_per_user
        now = int(time.time())
        async with self.redis.pipeline(transaction=False) as pipe:
            for conn in conns:
                await self._claim(
                    keys=[self.keys.user_connections(conn.user_id)],
                    args=[conn.id, value, cap, now, CONNECTION_TTL_S],
                    client=pipe,
                )
            results = await pipe.execute()
        return [None if not admitted else live == 0 for admitted, live in results]

    async def _unregister_all(self, conns: list[Connection]) -> list[bool]:
        """Remove each socket's entry (and expired ones of its user); True for each
        whose user has no live socket left."""
        now = str(int(time.time()))
        async with self.redis.pipeline(transaction=False) as pipe:
            for conn in conns:
                pipe.hdel(self.keys.user_connections(conn.user_id), conn.id)
                pipe.hgetall(self.keys.user_connections(conn.user_id))
                pipe.set(self.keys.last_seen(conn.user_id), now)
            results = await pipe.execute()
        went_offline = []
        stale: dict[str, set[str]] = {}
        for n, conn in enumerate(conns):
            after = results[3 * n + 1]
            live = live_routes(after)
            expired = set(after) - set(live)
            if expired:
                stale.setdefault(conn.user_id, set()).update(expired)
            went_offline.append(not live)
        if stale:
            async with self.redis.pipeline(transaction=False) as pipe:
                for user_id, fields in stale.items():
                    pipe.hdel(self.keys.user_connections(user_id), *fields)
                await pipe.execute()
        return went_offline

    async def refresh_registry(self) -> None:
        """Heartbeat: extend this instance's entries and prune expired ones."""
        if not self.by_user:
            return
        now = str(int(time.time()))
        async with self.redis.pipeline(transaction=False) as pipe:
            for user_id, conns in list(self.by_user.items()):
                key = self.keys.user_connections(user_id)
                value = route_value(self.instance_id)
                for conn_id in conns:
                    pipe.hset(key, conn_id, value)
                pipe.expire(key, CONNECTION_TTL_S)
                pipe.set(self.keys.last_seen(user_id), now)
            await pipe.execute()

    def close_sessions(self, hashes: Iterable[str]) -> int:
        """Close the sockets of these (revoked) sessions; how many were closing now."""
        doomed = set(hashes)
        return self._close(c for c in self.connections() if c.token_hash in doomed)

    def close_expired(self) -> int:
        """Close the sockets whose session passed its absolute expiry (no Redis)."""
        now = time.time()
        return self._close(c for c in self.connections() if c.expires_at <= now)

    def _close(self, conns: Iterable[Connection]) -> int:
        closed = 0
        for conn in conns:
            if not conn.closing:
                closed += 1
                self.spawn(conn.close(CLOSE_SESSION_REVOKED, "session revoked or expired"))
        return closed

    async def close_revoked(self) -> int:
        """Close every socket whose session is gone from Redis or past its absolute
        expiry: the backstop for a revocation announcement this gateway missed."""
        conns = self.connections()
        sessions = await self._sessions_of(conns, "expires_at")
        now = time.time()
        dead = {h for h, (expires,) in sessions.items() if expires is None or float(expires) <= now}
        return self._close(c for c in conns if c.token_hash in dead)

    async def _sessions_of(self, conns: list[Connection], *fields: str) -> dict[str, list[Any]]:
        """token hash -> `fields` of its session hash (None where gone), one round trip."""
        hashes = list({c.token_hash for c in conns})
        if not hashes:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for token_hash in hashes:
                pipe.hmget(self.keys.session(token_hash), *fields)
            rows = await pipe.execute()
        return dict(zip(hashes, rows, strict=True))

    async def extend_sessions(self) -> None:
        """An open socket is activity: extend its session's idle TTL (capped by expiry)."""
        sessions = await self._sessions_of(self.connections(), "expires_at", "idle_s")
        if not sessions:
            return
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for token_hash, (expires_at, idle_s) in sessions.items():
                if expires_at is None or not idle_s or int(idle_s) <= 0:
                    continue
                ttl = max(1, min(int(idle_s), int(float(expires_at) - now)))
                pipe.expire(self.keys.session(token_hash), ttl)
            await pipe.execute()

    async def close_all(self) -> None:
        """Shutdown: close every socket with GOING_AWAY and remove its entries."""
        conns = self.connections()
        await asyncio.gather(
            *(c.close(WSCloseCode.GOING_AWAY, "server shutdown") for c in conns),
            return_exceptions=True,
        )
        for conn in conns:
            with contextlib.suppress(Exception):
                await self.unregister(conn)

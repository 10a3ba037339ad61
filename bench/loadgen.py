"""The load generator: client processes that send and receive like real clients.

Each worker is a process of its own (multiprocessing, spawn) running one asyncio
loop (uvloop) with aiohttp: HTTP keep-alive for REST, one WebSocket per session.
Workers are bounded in count (the coordinator starts a few), in time (every job
has a duration and deadlines) and in concurrency (a cap on requests in flight;
what the cap refuses is counted as shed, not silently queued). They talk to
127.0.0.1 only.

Latency is measured with the client's own clock, time.perf_counter_ns, which on
Linux is CLOCK_MONOTONIC and therefore comparable across processes: a sender
writes its send instant into the message content and the receiving process
subtracts it from the instant the `message` frame arrives.

Senders are open-loop: request i is due at start + i / rate, whether or not
earlier ones have been answered, so a slow server shows as latency and shed
requests rather than as a politely lower rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import resource
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from typing import Any

import aiohttp
import orjson

CONTENT_MARK = "bench"


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


#: What a browser offers in Sec-WebSocket-Extensions: permessage-deflate, 2^15 window.
BROWSER_DEFLATE_WBITS = 15


def make_content(tag: str, index: int, size: int) -> str:
    """Message content carrying its send instant: `bench|tag|index|perf_ns|xxxx`."""
    head = f"{CONTENT_MARK}|{tag}|{index}|{time.perf_counter_ns()}|"
    return head + "x" * max(0, size - len(head))


def parse_content(content: str) -> tuple[str, int] | None:
    """(message key, send instant in ns) of a bench message, or None for other content."""
    parts = content.split("|", 4)
    if len(parts) < 4 or parts[0] != CONTENT_MARK:
        return None
    try:
        return f"{parts[1]}|{parts[2]}", int(parts[3])
    except ValueError:
        return None


def pushed_message(frame: dict[str, Any]) -> dict[str, Any] | None:
    """The message object of a server `message` frame, else None."""
    if frame.get("type") != "message":
        return None
    inner = frame.get("message")
    return inner if isinstance(inner, dict) else frame


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://", 1).rstrip("/") + "/v1/ws"


# --------------------------------------------------------------------------- jobs


@dataclass
class SendJob:
    """Send `rate` messages/s for `duration_s` from many senders (round robin)."""

    base_url: str
    #: (bearer token, receiver id) per sender.
    senders: list[tuple[str, str]]
    rate: float
    duration_s: float
    #: time.monotonic() instant to start at (all workers start together).
    start_at: float
    tag: str
    transport: str = "rest"  # "rest" or "ws"
    target_field: str = "to_user_id"  # or "to_group_id"
    content_bytes: int = 200
    max_in_flight: int = 256
    request_timeout_s: float = 30.0


@dataclass
class SendResult:
    offered: int = 0
    issued: int = 0
    ok: int = 0
    shed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ns: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0
    first_error: str = ""


@dataclass
class ReceiveJob:
    """Hold one WebSocket per token; record bench `message` frames until told to stop."""

    base_url: str
    tokens: list[str]
    connect_concurrency: int = 100
    #: Keep per-message (count, latest arrival) for fan-out completion times.
    track_messages: bool = False
    #: After stop: keep reading until no frame came for this long (or drain_max_s).
    quiet_s: float = 1.5
    drain_max_s: float = 30.0
    heartbeat_s: float | None = None
    #: Stop opening new sockets after this long (those left are counted as skipped).
    connect_budget_s: float | None = None


@dataclass
class ReceiveResult:
    connected: int = 0
    failed: int = 0
    connect_errors: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    frames: int = 0
    message_frames: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    #: message key -> [receivers that got it, latest latency ns, send ns, last arrival ns]
    per_message: dict[str, list[int]] = field(default_factory=dict)
    #: arrivals per 100 ms bucket of time.monotonic_ns()
    arrivals: dict[int, int] = field(default_factory=dict)
    closed_by_server: int = 0
    first_error: str = ""


# --------------------------------------------------------------------------- senders


async def _run_send(job: SendJob) -> SendResult:
    result = SendResult(offered=int(job.rate * job.duration_s))
    errors: Counter[str] = Counter()
    in_flight = 0
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=job.max_in_flight, limit_per_host=job.max_in_flight)
    timeout = aiohttp.ClientTimeout(total=job.request_timeout_s)
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    pending: dict[str, tuple[int, asyncio.Future[int]]] = {}
    readers: list[asyncio.Task[None]] = []

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        if job.transport == "ws":
            for token, _ in job.senders:
                ws = await http.ws_connect(
                    ws_url(job.base_url), headers={"Authorization": f"Bearer {token}"}
                )
                sockets.append(ws)
                readers.append(asyncio.create_task(_read_replies(ws, pending)))

        def note_error(kind: str, detail: str) -> None:
            errors[kind] += 1
            if not result.first_error:
                result.first_error = detail[:300]

        async def send_rest(index: int, token: str, receiver: str) -> None:
            nonlocal in_flight
            body = orjson.dumps(
                {
                    job.target_field: receiver,
                    "content": make_content(job.tag, index, job.content_bytes),
                }
            )
            started = time.perf_counter_ns()
            try:
                async with http.post(
                    job.base_url + "/v1/messages",
                    data=body,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    },
                ) as response:
                    payload = await response.read()
                    if response.status == 201:
                        result.ok += 1
                        result.latencies_ns.append(time.perf_counter_ns() - started)
                    else:
                        note_error(str(response.status), payload.decode(errors="replace"))
            except Exception as exc:  # every failure is a counted outcome
                note_error(type(exc).__name__, repr(exc))
            finally:
                in_flight -= 1

        async def send_ws(index: int, sender: int, receiver: str) -> None:
            nonlocal in_flight
            client_msg_id = str(uuid.uuid4())
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            started = time.perf_counter_ns()
            pending[client_msg_id] = (started, future)
            try:
                await sockets[sender].send_str(
                    orjson.dumps(
                        {
                            "type": "send",
                            "ref": client_msg_id,
                            "message": {
                                job.target_field: receiver,
                                "content": make_content(job.tag, index, job.content_bytes),
                                "client_msg_id": client_msg_id,
                            },
                        }
                    ).decode()
                )
                status = await asyncio.wait_for(future, job.request_timeout_s)
                if status == 0:
                    result.ok += 1
                    result.latencies_ns.append(time.perf_counter_ns() - started)
                else:
                    note_error(f"ws-error-{status}", "error frame")
            except Exception as exc:
                note_error(type(exc).__name__, repr(exc))
            finally:
                pending.pop(client_msg_id, None)
                in_flight -= 1

        await asyncio.sleep(max(0.0, job.start_at - time.monotonic()))
        started = time.perf_counter()
        index = 0
        n_senders = len(job.senders)
        while index < result.offered:
            due = min(result.offered, int((time.perf_counter() - started) * job.rate) + 1)
            while index < due:
                sender = index % n_senders
                if in_flight >= job.max_in_flight:
                    result.shed += 1
                else:
                    in_flight += 1
                    token, receiver = job.senders[sender]
                    coro = (
                        send_ws(index, sender, receiver)
                        if job.transport == "ws"
                        else send_rest(index, token, receiver)
                    )
                    task = asyncio.create_task(coro)
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    result.issued += 1
                index += 1
            await asyncio.sleep(0.001)
        if tasks:
            await asyncio.wait(set(tasks), timeout=job.request_timeout_s + 5)
        result.elapsed_s = time.perf_counter() - started
        for reader in readers:
            reader.cancel()
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()
    result.errors = dict(errors)
    return result


def reply_status(frame: dict[str, Any]) -> tuple[str, int] | None:
    """(ref, 0 if accepted else the error's HTTP status) of the answer to a `send` frame.

    The gateway answers {"type": "sent", "ref", "message"} or
    {"type": "error", "ref", "error": {code, message, details, status}}.
    """
    ref = frame.get("ref")
    if not isinstance(ref, str):
        return None
    if frame.get("type") == "sent":
        return ref, 0
    if frame.get("type") == "error":
        error = frame.get("error")
        status = error.get("status") if isinstance(error, dict) else None
        return ref, status if isinstance(status, int) else 400
    return None


async def _read_replies(
    ws: aiohttp.ClientWebSocketResponse, pending: dict[str, tuple[int, asyncio.Future[int]]]
) -> None:
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        try:
            frame = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            continue
        answer = reply_status(frame) if isinstance(frame, dict) else None
        if answer is not None and answer[0] in pending:
            future = pending[answer[0]][1]
            if not future.done():
                future.set_result(answer[1])


# --------------------------------------------------------------------------- receivers


async def _run_receive(job: ReceiveJob, ready: queue.Queue[Any], stop: Event) -> ReceiveResult:
    result = ReceiveResult()
    errors: Counter[str] = Counter()
    arrivals: Counter[int] = Counter()
    last_frame = [time.monotonic()]
    connector = aiohttp.TCPConnector(limit=0)
    limiter = asyncio.Semaphore(job.connect_concurrency)
    sockets: list[aiohttp.ClientWebSocketResponse] = []

    def on_frame(data: str) -> None:
        now_ns = time.perf_counter_ns()
        result.frames += 1
        last_frame[0] = time.monotonic()
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        message = pushed_message(frame) if isinstance(frame, dict) else None
        if message is None:
            return
        content = message.get("content")
        parsed = parse_content(content) if isinstance(content, str) else None
        if parsed is None:
            return
        key, sent_ns = parsed
        latency = now_ns - sent_ns
        result.message_frames += 1
        result.latencies_ns.append(latency)
        arrivals[time.monotonic_ns() // 100_000_000] += 1
        if job.track_messages:
            entry = result.per_message.get(key)
            if entry is None:
                result.per_message[key] = [1, latency, sent_ns, now_ns]
            else:
                entry[0] += 1
                entry[1] = max(entry[1], latency)
                entry[3] = max(entry[3], now_ns)

    async def hold(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                on_frame(msg.data)
        result.closed_by_server += 1

    readers: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(connector=connector) as http:
        budget_end = (
            time.monotonic() + job.connect_budget_s if job.connect_budget_s is not None else None
        )

        async def connect(token: str) -> None:
            async with limiter:
                if budget_end is not None and time.monotonic() > budget_end:
                    result.skipped += 1
                    return
                try:
                    ws = await http.ws_connect(
                        ws_url(job.base_url),
                        headers={"Authorization": f"Bearer {token}"},
                        heartbeat=job.heartbeat_s,
                        timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                        # Offer permessage-deflate as browsers do: the gateway's
                        # memory per socket is then what browsers cost it.
                        compress=BROWSER_DEFLATE_WBITS,
                    )
                except Exception as exc:
                    result.failed += 1
                    errors[type(exc).__name__ + ":" + str(getattr(exc, "status", ""))] += 1
                    if not result.first_error:
                        result.first_error = repr(exc)[:300]
                    return
                sockets.append(ws)
                readers.append(asyncio.create_task(hold(ws)))

        await asyncio.gather(*(connect(token) for token in job.tokens))
        result.connected = len(sockets)
        result.connect_errors = dict(errors)
        ready.put(("ready", result.connected, result.failed + result.skipped))
        # `stop` is a multiprocessing Event (set by the coordinator): polled, not awaited.
        while not stop.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + job.drain_max_s
        while time.monotonic() < deadline and time.monotonic() - last_frame[0] < job.quiet_s:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    result.arrivals = dict(arrivals)
    return result


# --------------------------------------------------------------------------- processes


def _entry(kind: str, job: Any, out: queue.Queue[Any], stop: Event) -> None:
    raise_fd_limit()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run
    try:
        if kind == "send":
            out.put(("result", runner(_run_send(job))))
        else:
            out.put(("result", runner(_run_receive(job, out, stop))))
    except BaseException:
        out.put(("error", traceback.format_exc()))


class Worker:
    """One client process: start it, wait for `ready` (receivers), `stop`, get the result."""

    def __init__(self, kind: str, job: SendJob | ReceiveJob) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.kind = kind
        self.out: Any = ctx.Queue()
        self.stop_event = ctx.Event()
        self.process = ctx.Process(
            target=_entry, args=(kind, job, self.out, self.stop_event), daemon=True
        )
        self.process.start()

    async def _next(self, timeout: float) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            alive = self.process.is_alive()
            try:
                # A worker that just exited may have written its result as it went:
                # read once more after seeing it dead before calling it lost.
                item = await asyncio.to_thread(self.out.get, True, 0.5 if alive else 2.0)
            except queue.Empty:
                if not alive:
                    raise RuntimeError(
                        f"{self.kind} worker died ({self.process.exitcode})"
                    ) from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.kind} worker gave nothing in {timeout}s") from None
                continue
            if item[0] == "error":
                raise RuntimeError(f"{self.kind} worker failed:\n{item[1]}")
            return item

    async def ready(self, timeout: float = 120.0) -> tuple[int, int]:
        item = await self._next(timeout)
        if item[0] != "ready":
            raise RuntimeError(f"expected ready, got {item[0]}")
        return int(item[1]), int(item[2])

    def stop(self) -> None:
        self.stop_event.set()

    async def result(self, timeout: float = 300.0) -> Any:
        item = await self._next(timeout)
        self.process.join(10)
        return item[1]

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def split(items: list[Any], parts: int) -> list[list[Any]]:
    """Round-robin split into at most `parts` non-empty lists."""
    chunks = [items[i::parts] for i in range(max(1, parts))]
    return [c for c in chunks if c]


async def run_senders(jobs: list[SendJob]) -> list[SendResult]:
    workers = [Worker("send", job) for job in jobs]
    try:
        timeout = max(j.duration_s for j in jobs) + max(j.request_timeout_s for j in jobs) + 60
        return list(await asyncio.gather(*(w.result(timeout) for w in workers)))
    finally:
        for worker in workers:
            worker.kill()


def merge_send(results: list[SendResult]) -> SendResult:
    merged = SendResult()
    errors: Counter[str] = Counter()
    for r in results:
        merged.offered += r.offered
        merged.issued += r.issued
        merged.ok += r.ok
        merged.shed += r.shed
        merged.latencies_ns.extend(r.latencies_ns)
        merged.elapsed_s = max(merged.elapsed_s, r.elapsed_s)
        errors.update(r.errors)
        merged.first_error = merged.first_error or r.first_error
    merged.errors = dict(errors)
    return merged


def merge_receive(results: list[ReceiveResult]) -> ReceiveResult:
    merged = ReceiveResult()
    errors: Counter[str] = Counter()
    arrivals: Counter[int] = Counter()
    for r in results:
        merged.connected += r.connected
        merged.failed += r.failed
        merged.skipped += r.skipped
        merged.frames += r.frames
        merged.message_frames += r.message_frames
        merged.closed_by_server += r.closed_by_server
        merged.latencies_ns.extend(r.latencies_ns)
        errors.update(r.connect_errors)
        arrivals.update(r.arrivals)
        merged.first_error = merged.first_error or r.first_error
        for key, (count, latest, sent_ns, arrived_ns) in r.per_message.items():
            entry = merged.per_message.setdefault(key, [0, 0, sent_ns, 0])
            entry[0] += count
            entry[1] = max(entry[1], latest)
            entry[3] = max(entry[3], arrived_ns)
    merged.connect_errors = dict(errors)
    merged.arrivals = dict(arrivals)
    return merged

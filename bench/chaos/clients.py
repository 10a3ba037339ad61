"""The chaos run's clients: users that send and receive as real clients do, and keep records.

Owns the client side of `make chaos`: registering the users and their groups,
the steady open-loop send load, and what each client saw. Clients behave as the
docs tell real ones to:

- a send carries a client_msg_id and is retried with the same one until it is
  acknowledged (201): after a refused or dropped connection, a 5xx, a 429 (after
  its Retry-After) or a timeout; a 401 logs in again first. Any other answer is
  recorded as a rejection and not retried;
- each (sender, conversation) is a stream whose next message waits for the
  previous one's acknowledgement, so the order of a stream is defined;
- each user holds one WebSocket through the load balancer and, on every
  (re)connect, sends `resume` with the last contiguous seq it holds per receiver
  (docs/realtime.md); `resumed` with complete=false is followed by another resume.

Every send attempt is recorded (start, end, outcome) for the unavailability
figures; every acknowledged message keeps its server id, receiver and seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

CONTENT_MARK = "chaos"
RETRY_FIRST_S = 0.25
RETRY_MAX_S = 2.0
REQUEST_TIMEOUT_S = 10.0
RESUME_REF = "resume"


def now() -> float:
    return time.monotonic()


def content_for(stream: int, k: int) -> str:
    return f"{CONTENT_MARK}|{stream}|{k}"


def parse_content(content: str) -> tuple[int, int] | None:
    """(stream, k) of a chaos message's content, else None."""
    parts = content.split("|")
    if len(parts) != 3 or parts[0] != CONTENT_MARK:
        return None
    try:
        return int(parts[1]), int(parts[2])
    except ValueError:
        return None


@dataclass
class Account:
    id: str
    username: str
    password: str
    token: str


@dataclass
class Attempt:
    started: float
    ended: float
    ok: bool
    outcome: str


@dataclass
class SentMessage:
    stream: int
    k: int
    client_msg_id: str
    first_attempt: float
    acked_at: float | None = None
    attempts: int = 0
    id: str | None = None
    seq: int | None = None
    receiver_id: str | None = None
    #: "status: body" of an answer that is neither success nor worth a retry.
    rejected: str = ""


@dataclass
class Stream:
    index: int
    sender: Client
    kind: str  # "user" or "group"
    target: str
    messages: list[SentMessage] = field(default_factory=list)
    busy: bool = False


@dataclass
class Client:
    """One user: its account, its WebSocket and what reached it."""

    account: Account
    groups: list[str] = field(default_factory=list)
    #: receiver id -> seq -> message id, from `message` frames (pushes and resume replays).
    received: dict[str, dict[int, str]] = field(default_factory=dict)
    watermark: dict[str, int] = field(default_factory=dict)
    connects: int = 0
    resumes: int = 0
    relogins: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    resumed: asyncio.Event = field(default_factory=asyncio.Event)
    ws: aiohttp.ClientWebSocketResponse | None = None

    @property
    def receivers(self) -> list[str]:
        return [self.account.id, *self.groups]

    def note(self, message: dict[str, Any]) -> None:
        receiver = message.get("receiver") or {}
        receiver_id, seq, mid = receiver.get("id"), message.get("seq"), message.get("id")
        if not isinstance(receiver_id, str) or not isinstance(seq, int):
            return
        self.received.setdefault(receiver_id, {})[seq] = str(mid)
        mark = self.watermark.get(receiver_id, 0)
        have = self.received[receiver_id]
        while mark + 1 in have:
            mark += 1
        self.watermark[receiver_id] = mark


class Transient(Exception):
    """An answer worth a retry (5xx, 429, a dropped connection, a timeout)."""

    def __init__(self, outcome: str, wait_s: float | None = None) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.wait_s = wait_s


class Load:
    """The users, their streams and sockets, and the records of a run."""

    def __init__(self, base_url: str, http: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.ws_url = self.base_url.replace("http://", "ws://", 1) + "/v1/ws"
        self.http = http
        self.clients: list[Client] = []
        self.groups: dict[str, list[Client]] = {}
        self.streams: list[Stream] = []
        self.attempts: list[Attempt] = []
        self.offered = 0
        self.shed = 0
        self.outcomes: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sockets: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.give_up_at = float("inf")

    # ------------------------------------------------------------------ requests

    async def _call(
        self, method: str, path: str, *, token: str | None = None, body: Any = None
    ) -> tuple[int, Any, dict[str, str]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with self.http.request(
                method,
                self.base_url + path,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            ) as response:
                raw = await response.read()
                payload = orjson.loads(raw) if raw else None
                return response.status, payload, dict(response.headers)
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise Transient(type(exc).__name__) from None

    async def call_until_ok(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        ok: tuple[int, ...] = (200, 201),
        deadline_s: float = 120.0,
    ) -> Any:
        """A setup or check call, retried through faults for a bounded time."""
        deadline = now() + deadline_s
        last = ""
        while now() < deadline:
            try:
                status, payload, _ = await self._call(method, path, token=token, body=body)
            except Transient as exc:
                last = exc.outcome
            else:
                if status in ok:
                    return payload
                last = f"{status}: {payload}"
                if status < 500 and status not in (408, 429):
                    raise RuntimeError(f"{method} {path} answered {last}")
            await asyncio.sleep(0.5)
        raise RuntimeError(f"{method} {path} gave no {ok} within {deadline_s:.0f} s: {last}")

    async def _login(self, account: Account) -> None:
        body = {"username": account.username, "password": account.password}
        payload = await self.call_until_ok("POST", "/v1/sessions", body=body)
        account.token = payload["token"]

    # ------------------------------------------------------------------ setup

    async def setup(self, users: int, groups: int, group_size: int, peers: int) -> None:
        """Register and log in `users` fresh users; make `groups` groups of `group_size`;
        a direct stream from each user to each of its `peers` next users, and a group
        stream per member."""
        gate = asyncio.Semaphore(8)

        async def new_account() -> Account:
            username = f"chaos_{secrets.token_hex(6)}"
            password = "pw-" + secrets.token_hex(8)
            async with gate:
                created = await self.call_until_ok(
                    "POST", "/v1/users", body={"username": username, "password": password}
                )
                account = Account(created["id"], username, password, "")
                await self._login(account)
            return account

        accounts = await asyncio.gather(*(new_account() for _ in range(users)))
        self.clients = [Client(a) for a in accounts]
        for g in range(groups):
            members = [self.clients[(g * group_size + i) % users] for i in range(group_size)]
            owner, rest = members[0], members[1:]
            created = await self.call_until_ok(
                "POST",
                "/v1/groups",
                token=owner.account.token,
                body={"name": f"chaos-{g}", "member_ids": [m.account.id for m in rest]},
            )
            self.groups[created["id"]] = members
            for member in members:
                member.groups.append(created["id"])
        for i, client in enumerate(self.clients):
            for step in range(1, peers + 1):
                peer = self.clients[(i + step) % users]
                self.streams.append(Stream(len(self.streams), client, "user", peer.account.id))
        for group_id, members in self.groups.items():
            for member in members:
                self.streams.append(Stream(len(self.streams), member, "group", group_id))

    # ------------------------------------------------------------------ sockets

    async def open_sockets(self, timeout_s: float = 120.0) -> None:
        self._sockets = [asyncio.create_task(self._hold(c)) for c in self.clients]
        await asyncio.wait_for(asyncio.gather(*(c.resumed.wait() for c in self.clients)), timeout_s)

    async def _hold(self, client: Client) -> None:
        """Keep one socket open; on every (re)connect resume from the watermarks."""
        backoff = RETRY_FIRST_S
        while not self._stopping.is_set():
            try:
                async with self.http.ws_connect(
                    self.ws_url,
                    headers={"Authorization": f"Bearer {client.account.token}"},
                    heartbeat=5.0,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                ) as ws:
                    client.ws = ws
                    client.connects += 1
                    backoff = RETRY_FIRST_S
                    await self._resume(client)
                    async for frame in ws:
                        if frame.type != aiohttp.WSMsgType.TEXT:
                            continue
                        await self._on_frame(client, orjson.loads(frame.data))
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 401:
                    with contextlib.suppress(Exception):
                        await self._login(client.account)
                        client.relogins += 1
            except (aiohttp.ClientError, TimeoutError, OSError, RuntimeError):
                pass
            finally:
                client.ws = None
            if self._stopping.is_set():
                return
            await asyncio.sleep(backoff)
            backoff = min(RETRY_MAX_S, backoff * 2)

    async def _resume(self, client: Client) -> None:
        ws = client.ws
        if ws is None:
            return
        client.resumes += 1
        seqs = {r: client.watermark.get(r, 0) for r in client.receivers}
        await ws.send_str(
            orjson.dumps({"type": "resume", "ref": RESUME_REF, "seqs": seqs}).decode()
        )

    async def _resume_later(self, client: Client) -> None:
        await asyncio.sleep(1.0)
        with contextlib.suppress(Exception):
            await self._resume(client)

    async def _on_frame(self, client: Client, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "hello":
            client.connected.set()
        elif kind == "error" and frame.get("ref") == RESUME_REF:
            # The replay failed (a store or Redis not answering): ask again, as a client does.
            task = asyncio.create_task(self._resume_later(client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "message" and isinstance(frame.get("message"), dict):
            client.note(frame["message"])
        elif kind == "resumed":
            if frame.get("complete") is False:
                await self._resume(client)
            else:
                client.resumed.set()

    async def final_resume(self, timeout_s: float = 60.0) -> int:
        """Ask every connected socket for what it lacks; return how many did not answer."""
        for client in self.clients:
            client.resumed.clear()
            with contextlib.suppress(Exception):
                await self._resume(client)
        done = await asyncio.wait(
            [asyncio.create_task(c.resumed.wait()) for c in self.clients], timeout=timeout_s
        )
        for task in done[1]:
            task.cancel()
        return len(done[1])

    # ------------------------------------------------------------------ sending

    async def run(
        self,
        rate: float,
        until: Callable[[], bool],
        max_s: float,
        group_share: float,
        settle_s: float,
    ) -> float:
        """Offer `rate` msg/s until `until()` says so (at most `max_s`), open loop: a
        message due while every stream of its kind waits for an acknowledgement is
        counted as shed. Then let the streams finish their retries for at most
        `settle_s`. Returns how long the load ran."""
        direct = [s for s in self.streams if s.kind == "user"]
        grouped = [s for s in self.streams if s.kind == "group"]
        pointers = {"user": 0, "group": 0}
        started = now()
        issued = 0
        carry = 0.0
        while (elapsed := now() - started) < max_s and not until():
            due = int(elapsed * rate) + 1
            while issued < due:
                issued += 1
                self.offered += 1
                carry += group_share
                kind = "group" if carry >= 1.0 and grouped else "user"
                if kind == "group":
                    carry -= 1.0
                pool = grouped if kind == "group" else direct
                stream = self._idle(pool, pointers, kind)
                if stream is None:
                    self.shed += 1
                    continue
                stream.busy = True
                task = asyncio.create_task(self._send_next(stream))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(0.005)
        ran_for = now() - started
        self.give_up_at = now() + settle_s
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=settle_s + REQUEST_TIMEOUT_S + 5)
        return ran_for

    @staticmethod
    def _idle(pool: list[Stream], pointers: dict[str, int], kind: str) -> Stream | None:
        for _ in range(len(pool)):
            stream = pool[pointers[kind] % len(pool)]
            pointers[kind] += 1
            if not stream.busy:
                return stream
        return None

    async def _send_next(self, stream: Stream) -> None:
        message = SentMessage(
            stream=stream.index,
            k=len(stream.messages),
            client_msg_id=str(uuid.uuid4()),
            first_attempt=now(),
        )
        stream.messages.append(message)
        field_name = "to_user_id" if stream.kind == "user" else "to_group_id"
        body = {
            field_name: stream.target,
            "content": content_for(stream.index, message.k),
            "client_msg_id": message.client_msg_id,
        }
        account = stream.sender.account
        backoff = RETRY_FIRST_S
        try:
            while now() < self.give_up_at:
                message.attempts += 1
                began = now()
                wait_s: float | None = None
                try:
                    status, payload, headers = await self._call(
                        "POST", "/v1/messages", token=account.token, body=body
                    )
                except Transient as exc:
                    outcome, ok = exc.outcome, False
                else:
                    outcome, ok = str(status), status in (200, 201)
                    if ok:
                        message.acked_at = now()
                        message.id = payload["id"]
                        message.seq = payload["seq"]
                        message.receiver_id = payload["receiver"]["id"]
                    elif status == 429:
                        wait_s = min(5.0, float(headers.get("Retry-After", "1") or 1))
                    elif status == 401:
                        with contextlib.suppress(Exception):
                            await self._login(account)
                            stream.sender.relogins += 1
                    elif status < 500 and status != 408:
                        message.rejected = f"{status}: {payload}"
                self.attempts.append(Attempt(began, now(), ok, outcome))
                self.outcomes[outcome] += 1
                if ok or message.rejected:
                    return
                await asyncio.sleep(wait_s if wait_s is not None else backoff)
                backoff = min(RETRY_MAX_S, backoff * 2)
        finally:
            stream.busy = False

    async def stop(self) -> None:
        self._stopping.set()
        for task in list(self._tasks):
            task.cancel()
        for client in self.clients:
            if client.ws is not None:
                with contextlib.suppress(Exception):
                    await client.ws.close()
        for task in self._sockets:
            task.cancel()
        await asyncio.gather(*self._sockets, return_exceptions=True)

    # ------------------------------------------------------------------ views

    def sent(self) -> list[SentMessage]:
        return [m for s in self.streams for m in s.messages]

"""Scenario 9 (issue 16): the inbox read and the latency of message changes.

- GET /v1/conversations for a user with 1,000 conversations (target p99 < 15 ms):
  the user gets a direct conversation with every seeded user (one message each)
  and joins groups for the rest; once the inbox lists all of them, one client
  asks for the first page (limit 50) sequentially, `INBOX_REQUESTS` times per run.
- Edit, delete and reaction latency at idle (target p99 < 50 ms): from just
  before the request to the moment the other party's WebSocket reader has the
  `message_edited` / `message_deleted` / `reaction` frame; one change at a time
  (idle), 100 of each kind per run, each run once the whole machine is quiet
  (under 0.3 busy cores, waited for at most 30 s, the wait reported). A delete
  needs a message each: it is sent before each delete, and that send is timed
  the same way (request to Bob's `message` frame), the baseline the changes
  compare with on the same machine.
Every figure is the median over the plan's runs of the per-run p99.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from bench.procstat import cpu_seconds, wait_until_quiet
from bench.report import Row
from bench.stats import Latency, median, median_latency
from tests.support.client import Api, User

INBOX_TARGET_MS = 15.0
CHANGE_TARGET_MS = 50.0
#: Issue 17's idle send: p50 <= 5 ms and p99 <= 15 ms, over REST and over WebSocket.
IDLE_SEND_P50_MS, IDLE_SEND_P99_MS = 5.0, 15.0
KINDS = ("edit", "reaction", "delete", "send", "send_rest_ack", "send_ws_ack", "send_ws_push")


class FrameWaiter:
    """One WebSocket whose reader resolves the waiter of the next matching frame."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pending: tuple[Callable[[dict[str, Any]], bool], asyncio.Future[int]] | None = None
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            arrived = time.perf_counter_ns()
            if self.pending is None:
                continue
            match, future = self.pending
            frame = msg.json()
            if match(frame) and not future.done():
                future.set_result(arrived)

    def expect(self, match: Callable[[dict[str, Any]], bool]) -> asyncio.Future[int]:
        """A future of the next matching frame's arrival (perf_counter_ns)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending = (match, future)
        return future

    async def timed(
        self, action: Callable[[], Awaitable[Any]], match: Callable[[dict[str, Any]], bool]
    ) -> int:
        """Nanoseconds from just before `action` to the matching frame's arrival."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending = (match, future)
        started = time.perf_counter_ns()
        async with asyncio.timeout(30):
            await action()
            arrived = await asyncio.wait_for(future, 10)
        self.pending = None
        return arrived - started

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


async def _ok(reply: Any, status: int) -> None:
    if reply.status != status:
        raise RuntimeError(f"unexpected answer {reply.status}: {reply.body}")


async def seed_inbox(api: Api, hub: User, peers: list[User], total: int) -> None:
    """Give `hub` `total` conversations: direct ones with `peers`, then groups."""
    gate = asyncio.Semaphore(16)

    async def direct(peer: User) -> None:
        async with gate:
            body = {"to_user_id": hub.id, "content": "hi", "client_msg_id": str(uuid.uuid4())}
            await _ok(await api.call("POST", "/v1/messages", token=peer.token, json=body), 201)

    async def group(n: int) -> None:
        async with gate:
            body = {"name": f"bench-{n}", "member_ids": []}
            await _ok(await api.call("POST", "/v1/groups", token=hub.token, json=body), 201)

    direct_peers = peers[:total]
    await asyncio.gather(*(direct(p) for p in direct_peers))
    await asyncio.gather(*(group(n) for n in range(total - len(direct_peers))))


async def count_inbox(api: Api, user: User) -> int:
    count, cursor = 0, None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        reply = await api.call("GET", "/v1/conversations", token=user.token, params=params)
        await _ok(reply, 200)
        count += len(reply.body["conversations"])
        cursor = reply.body["next_cursor"]
        if cursor is None:
            return count


async def inbox_latency(api: Api, user: User, requests: int) -> Latency | None:
    samples = []
    for _ in range(requests):
        started = time.perf_counter_ns()
        reply = await api.call("GET", "/v1/conversations", token=user.token, params={"limit": 50})
        samples.append(time.perf_counter_ns() - started)
        await _ok(reply, 200)
    return Latency.from_ns(samples)


async def change_latencies(
    api: Api,
    http: aiohttp.ClientSession,
    base_url: str,
    ada: User,
    bob: User,
    count: int,
    log: Callable[[str], None] | None = None,
) -> dict[str, Latency | None]:
    """Ada changes messages; Bob's socket times each change's frame."""
    ws = await http.ws_connect(
        base_url + "/v1/ws", headers={"Authorization": f"Bearer {bob.token}"}, heartbeat=None
    )
    bob_socket = FrameWaiter(ws)
    ada_ws = await http.ws_connect(
        base_url + "/v1/ws", headers={"Authorization": f"Bearer {ada.token}"}, heartbeat=None
    )
    ada_socket = FrameWaiter(ada_ws)
    samples: dict[str, list[int]] = {kind: [] for kind in KINDS}
    try:
        body = {"to_user_id": bob.id, "content": "start", "client_msg_id": str(uuid.uuid4())}
        reply = await api.call("POST", "/v1/messages", token=ada.token, json=body)
        await _ok(reply, 201)
        target = reply.body["id"]
        for i in range(count):
            if log is not None and i % 25 == 0:
                log(f"scenario 9: change {i} of {count}")
            content = f"edit {i}"

            async def edit(content: str = content) -> None:
                answer = await api.call(
                    "PATCH", f"/v1/messages/{target}", token=ada.token, json={"content": content}
                )
                await _ok(answer, 200)

            samples["edit"].append(
                await bob_socket.timed(
                    edit,
                    lambda f, c=content: (
                        f.get("type") == "message_edited" and f["event"].get("content") == c
                    ),
                )
            )
            method = "PUT" if i % 2 == 0 else "DELETE"

            async def react(method: str = method) -> None:
                answer = await api.call(
                    method, f"/v1/messages/{target}/reactions/%F0%9F%91%8D", token=ada.token
                )
                await _ok(answer, 200)

            samples["reaction"].append(
                await bob_socket.timed(
                    react,
                    lambda f, added=(method == "PUT"): (
                        f.get("type") == "reaction" and f["event"].get("added") is added
                    ),
                )
            )
            body = {"to_user_id": bob.id, "content": f"d{i}", "client_msg_id": str(uuid.uuid4())}
            answers: list[Any] = []

            async def post(body: dict[str, Any] = body, answers: list[Any] = answers) -> None:
                answers.append(await api.call("POST", "/v1/messages", token=ada.token, json=body))
                await _ok(answers[0], 201)

            acked: list[int] = []

            async def timed_post(acked: list[int] = acked) -> None:
                started = time.perf_counter_ns()
                await post()
                acked.append(time.perf_counter_ns() - started)

            samples["send"].append(
                await bob_socket.timed(
                    timed_post,
                    lambda f, c=f"d{i}": (
                        f.get("type") == "message" and f["message"].get("content") == c
                    ),
                )
            )
            samples["send_rest_ack"] += acked
            doomed = answers[0].body["id"]
            # The same send over Ada's WebSocket: to her `sent` frame, and to Bob's frame.
            ref, text = f"w{i}", f"ws {i}"
            sent = ada_socket.expect(lambda f, r=ref: f.get("type") == "sent" and f.get("ref") == r)
            pushed = bob_socket.expect(
                lambda f, c=text: f.get("type") == "message" and f["message"].get("content") == c
            )
            started = time.perf_counter_ns()
            frame = {"to_user_id": bob.id, "content": text, "client_msg_id": str(uuid.uuid4())}
            await ada_ws.send_json({"type": "send", "ref": ref, "message": frame})
            async with asyncio.timeout(10):
                samples["send_ws_ack"].append(await sent - started)
                samples["send_ws_push"].append(await pushed - started)
            ada_socket.pending = bob_socket.pending = None

            async def delete(doomed: str = doomed) -> None:
                await _ok(await api.call("DELETE", f"/v1/messages/{doomed}", token=ada.token), 204)

            samples["delete"].append(
                await bob_socket.timed(
                    delete,
                    lambda f, d=doomed: (
                        f.get("type") == "message_deleted" and f["event"].get("message_id") == d
                    ),
                )
            )
    finally:
        await bob_socket.close()
        await ada_socket.close()
    return {kind: Latency.from_ns(values) for kind, values in samples.items()}


async def conversations(ctx: Any) -> list[Row]:
    """Scenario 9 (see the module docstring); `ctx` is bench.scenarios.Context."""
    plan, api = ctx.plan, ctx.api
    total = 1000 if plan.runs > 1 or plan.users >= 1000 else 100
    requests = 500 if total == 1000 else 100
    changes = 100 if total == 1000 else 20
    hub = await api.new_user("hub")
    ctx.log(f"scenario 9: seeding {total} conversations")
    await seed_inbox(api, hub, ctx.users, total)
    deadline = time.monotonic() + 120
    listed = 0
    while time.monotonic() < deadline:
        listed = await count_inbox(api, hub)
        if listed >= total:
            break
        await asyncio.sleep(0.5)
    gateway = ctx.bench.system.services["gateway"].process
    inbox_runs: list[Latency | None] = []
    gateway_cpu_ms: list[float] = []
    quiet_notes: list[str] = []
    change_runs: dict[str, list[Latency | None]] = {kind: [] for kind in KINDS}
    for run in range(plan.runs):
        ctx.log(f"scenario 9 run {run + 1}: inbox reads, then changes")
        cpu_before = cpu_seconds(gateway.pid)
        inbox_runs.append(await inbox_latency(api, hub, requests))
        gateway_cpu_ms.append((cpu_seconds(gateway.pid) - cpu_before) * 1000 / requests)
        ctx.log(f"scenario 9 run {run + 1}: inbox {inbox_runs[-1]}")
        ada, bob = await api.new_user("ada"), await api.new_user("bob")
        # "At idle": the seeding's and the inbox reads' after-work (inbox updates,
        # persister, store) drains first, so a change is not queued behind it.
        waited, busy = await wait_until_quiet()
        quiet_notes.append(f"{waited:.0f}s to {busy:.2f} cores")
        measured = await change_latencies(api, ctx.http, ctx.base_url, ada, bob, changes, ctx.log)
        for kind, latency in measured.items():
            change_runs[kind].append(latency)

    def row(
        name: str,
        runs: list[Latency | None],
        target_ms: float,
        note: str,
        p50_target_ms: float | None = None,
    ) -> Row:
        latency = median_latency(runs)
        p99s = [r.p99_ms for r in runs if r is not None]
        p50s = [r.p50_ms for r in runs if r is not None]
        met = (median(p99s) < target_ms) if p99s else None
        target = f"< {target_ms:.0f} ms"
        if p50_target_ms is not None and met is not None:
            met = met and median(p50s) <= p50_target_ms
            target = f"p50 <= {p50_target_ms:.0f}, p99 <= {target_ms:.0f} ms"
        return Row(
            "9",
            name,
            value=median(p99s) if p99s else None,
            unit="ms p99",
            target=target,
            met=met,
            runs=p99s,
            note=f"{latency.short() if latency else ''}; {note}",
            detail={"latency": latency.as_dict() if latency else None},
        )

    rows = [
        row(
            f"GET /v1/conversations, {listed:,} conversations",
            inbox_runs,
            INBOX_TARGET_MS,
            f"limit 50, {requests} sequential requests per run; the gateway's CPU per "
            f"request {median(gateway_cpu_ms):.1f} ms (runs "
            + ", ".join(f"{v:.1f}" for v in gateway_cpu_ms)
            + ")",
        )
    ]
    for kind in ("edit", "delete", "reaction", "send"):
        note = (
            f"{changes} per run, one at a time, each run once the machine was quiet "
            f"(waited {', '.join(quiet_notes)})"
        )
        if kind == "send":
            note += "; a new message, for comparison under the same conditions"
        rows.append(
            row(
                f"{kind}: request to the other party's frame (idle)",
                change_runs[kind],
                CHANGE_TARGET_MS,
                note,
            )
        )
    idle_sends = {
        "send_rest_ack": "idle send, REST: request to the 201 answer",
        "send_ws_ack": "idle send, WebSocket: `send` frame to the `sent` frame",
        "send_ws_push": "idle send, WebSocket: `send` frame to the other party's frame",
    }
    for kind, name in idle_sends.items():
        rows.append(
            row(
                name,
                change_runs[kind],
                IDLE_SEND_P99_MS,
                f"{changes} per run, one at a time (issue 17's idle send)",
                p50_target_ms=IDLE_SEND_P50_MS,
            )
        )
    return rows

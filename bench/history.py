"""Scenario 6: history, sync and first sends while the store grows from 10^4 to 10^6 messages.

Seeding goes through the same code as the services, in bulk: the read model's
writer (libs/readmodels/messages.py `MessageWriter`, the persister's sink) for
the messages, message_service's `Ledger.record` for the acceptance ledger, and
`Ledger.advance_counters` for the heads. Messages get seq, dseq and created_at
as message_service gives them. The filler is 10^4 conversations (9,000 direct,
1,000 groups) of synthetic ids, grown evenly to each size of the plan.

The measured conversations are between real (seeded) users, written the same way
once at the start, so that only the store around them grows:
- deep: reader <-> peer, 2,000 messages over the last two days, both directions;
- fresh: peer2 -> reader, 3 messages, one way;
- group: 50 members (made through the API), 1,000 messages in its log;
- warm: reader <-> peer3, 60 messages sent through the API (the cache holds them).

Per size, each read at a steady rate from one client (p50/p99): the newest page
warm (cache) and cold (stored only: deep, fresh, group, and the warm conversation
after its cache keys are deleted: an eviction); a page more than 1,000 messages
back (a cursor); a date-filtered page (since/until, no cursor); a sync page after a
day offline. Then the first sends to receivers message_service has not seen since
it started, and the first sends after a restart of message_service. Also: the
writer's rate into the store and the store's CPU per message while seeding
(FerretDB + PostgreSQL processes), and disk bytes and store memory per message.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.environment import NotAvailable, create_group, require_route
from bench.loadgen import make_content
from bench.report import Row, not_available
from bench.stats import Latency, median_latency
from libs.contracts.keys import RedisKeys
from libs.contracts.messages import MessageAcceptedPayload, conversation_id
from libs.ids import new_id
from libs.readmodels.messages import MessageWriter
from libs.settings import ServiceSettings
from libs.storage.mongo import MongoShards
from message_service.repository import Ledger, ReceiverPosition, dedupe_key

CONVERSATIONS = 10_000
GROUPS = 1_000
DEEP = 2_000
GROUP_LOG = 1_000
WARM = 60
CHUNK = 1_000  # messages per writer call (two shards: ~500 per insert, the persister's batch)
IN_FLIGHT = 4
FIRST_SENDS = 20
READ_TARGET_MS = 10.0
DEEP_TARGET_MS = 25.0


@dataclass
class Seeder:
    """message_service's numbering, kept in memory for the bulk writes."""

    shards: MongoShards
    writer: MessageWriter
    ledger: Ledger
    seqs: dict[str, tuple[int, int]] = field(default_factory=dict)
    dseqs: dict[tuple[str, str], int] = field(default_factory=dict)
    written: int = 0
    writer_s: float = 0.0
    ledger_s: float = 0.0

    def accept(
        self, sender: str, receiver: str, kind: str, at: datetime, n: int
    ) -> MessageAcceptedPayload:
        seq = self.seqs.get(receiver, (0, 0))[0] + 1
        millis = max(int(at.timestamp() * 1000), self.seqs.get(receiver, (0, 0))[1] + 1)
        self.seqs[receiver] = (seq, millis)
        dseq = None
        if kind == "user":
            dseq = self.dseqs.get((receiver, sender), 0) + 1
            self.dseqs[(receiver, sender)] = dseq
        return MessageAcceptedPayload(
            message_id=new_id(),
            receiver_kind=kind,  # type: ignore[arg-type]
            receiver_id=receiver,
            seq=seq,
            sender_id=sender,
            content=make_content("seed", n, 120),
            created_at=datetime.fromtimestamp(millis / 1000, UTC),
            dseq=dseq,
        )

    async def write(self, messages: list[MessageAcceptedPayload]) -> None:
        """Ledger, then the messages, in chunks with a few in flight; timed apart."""
        chunks = [messages[i : i + CHUNK] for i in range(0, len(messages), CHUNK)]
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def ledger(chunk: list[MessageAcceptedPayload]) -> None:
            async with gate:
                await self.ledger.record(
                    [(dedupe_key(m.receiver_id, m.sender_id, None, m.message_id), m) for m in chunk]
                )

        async def store(chunk: list[MessageAcceptedPayload]) -> None:
            async with gate:
                await self.writer.insert(chunk)

        started = time.perf_counter()
        await asyncio.gather(*(ledger(c) for c in chunks))
        self.ledger_s += time.perf_counter() - started
        started = time.perf_counter()
        await asyncio.gather(*(store(c) for c in chunks))
        self.writer_s += time.perf_counter() - started
        self.written += len(messages)

    async def heads(self) -> None:
        await self.ledger.advance_counters(
            {r: ReceiverPosition(s, ms) for r, (s, ms) in self.seqs.items()}, dict(self.dseqs)
        )


def _store_pids(run_dir: Path) -> list[int]:
    """FerretDB shards, the PostgreSQL server and all its backends."""
    from bench.procstat import infra_pids

    pids = [pid for name, pid in infra_pids(run_dir).items() if name.startswith("ferretdb")]
    postmaster = infra_pids(run_dir).get("postgres")
    if postmaster:
        pids.append(postmaster)
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    stat = (proc / "stat").read_text()
                except OSError:
                    continue
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == postmaster:
                    pids.append(int(proc.name))
    return pids


def _store_cpu_s(run_dir: Path) -> float:
    from bench.procstat import cpu_seconds

    total = 0.0
    for pid in _store_pids(run_dir):
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue
    return total


def _store_pss_bytes(run_dir: Path) -> int:
    """Proportional set size of the store's processes (shared buffers counted once)."""
    total = 0
    for pid in _store_pids(run_dir):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


async def _disk_bytes(sql_urls: tuple[str, ...], schema: str) -> int:
    """Bytes of the namespace's tables and indexes in PostgreSQL, over every shard."""
    import asyncpg

    total = 0
    for url in sql_urls:
        connection = await asyncpg.connect(url)
        try:
            total += int(
                await connection.fetchval(
                    "SELECT COALESCE(SUM(pg_total_relation_size(format('%I.%I', schemaname, "
                    "tablename))), 0) FROM pg_tables WHERE schemaname = $1",
                    schema,
                )
            )
        finally:
            await connection.close()
    return total


async def grow_to(seeder: Seeder, total: int, base: datetime, state: dict[str, int]) -> None:
    """Filler over CONVERSATIONS conversations until `seeder.written` reaches `total`."""
    while seeder.written < total:
        count = min(50_000, total - seeder.written)
        batch = []
        for _ in range(count):
            n = state["filler"] = state.get("filler", 0) + 1
            k = n % CONVERSATIONS
            at = base + timedelta(milliseconds=n)
            if k < GROUPS:
                batch.append(seeder.accept(f"fm{n % 50}", f"fg{k}", "group", at, n))
            elif n % 3:
                batch.append(seeder.accept(f"fa{k}", f"fb{k}", "user", at, n))
            else:
                batch.append(seeder.accept(f"fb{k}", f"fa{k}", "user", at, n))
        await seeder.write(batch)


async def steady_get(
    ctx: Any, path: str, params: dict[str, str], token: str, rate: float, duration_s: float
) -> tuple[Latency | None, list[str]]:
    """GET at a steady rate (open loop) from this process; latency per answered request."""
    latencies: list[int] = []
    problems: list[str] = []
    url = ctx.base_url + path
    headers = {"Authorization": f"Bearer {token}"}

    async def one() -> None:
        started = time.perf_counter_ns()
        async with ctx.http.get(url, params=params, headers=headers) as response:
            body = await response.json(content_type=None)
            elapsed = time.perf_counter_ns() - started
        if response.status != 200:
            problems.append(f"status {response.status}")
            return
        if not isinstance(body, dict) or not body.get("messages"):
            problems.append("empty page")
        latencies.append(elapsed)

    tasks = []
    count = max(1, round(rate * duration_s))
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    problems += [type(r).__name__ for r in results if isinstance(r, BaseException)]
    return Latency.from_ns(latencies), problems


async def _timed_sends(ctx: Any, sender: Any, receivers: list[Any], rate: float) -> Latency | None:
    """One send to each receiver, at a steady rate; latency per 201."""
    latencies: list[int] = []
    for index, receiver in enumerate(receivers):
        started = time.perf_counter_ns()
        reply = await ctx.api.call(
            "POST",
            "/v1/messages",
            token=sender.token,
            json={"to_user_id": receiver.id, "content": make_content("first", index, 100)},
        )
        elapsed = time.perf_counter_ns() - started
        if reply.status == 201:
            latencies.append(elapsed)
        await asyncio.sleep(max(0.0, 1 / rate - elapsed / 1e9))
    return Latency.from_ns(latencies)


def _sync_cursor(seqs: dict[str, int]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"s": seqs})).decode().rstrip("=")


async def history(ctx: Any) -> list[Row]:
    sizes = ctx.plan.history_sizes
    try:
        if ctx.seed_error:
            raise NotAvailable(ctx.seed_error)
        if len(ctx.users) < 12:
            raise NotAvailable("fewer than 12 users seeded")
        reader, peer, peer2, peer3 = ctx.users[-4:]
        await require_route(
            ctx.api,
            "GET",
            "/v1/messages",
            reader.token,
            "history",
            params={"with_user": peer.id, "limit": "1"},
        )
    except NotAvailable as exc:
        return [not_available("6", f"history at {n:,} stored", str(exc)) for n in sizes]

    settings = ServiceSettings()
    sql_urls = settings.mongo_shards_sql
    shards = MongoShards(settings.mongo_shards, ctx.bench.database)
    seeder = Seeder(shards, MessageWriter(shards), Ledger(shards))
    from deploy.local.stack import StackConfig

    run_dir = StackConfig.from_env().run_dir
    keys = RedisKeys(ctx.bench.namespace)
    rows: list[Row] = []
    try:
        members = ctx.users[: min(50, len(ctx.users) - 4)]
        group_id = await create_group(ctx.api, reader, [reader, *members[:-1]])
        now = datetime.now(UTC)
        measured = []
        for n in range(DEEP):  # two days, one message every ~86 s
            at = now - timedelta(days=2) + timedelta(seconds=86.4 * n)
            pair = (peer.id, reader.id) if n % 5 < 3 else (reader.id, peer.id)
            measured.append(seeder.accept(*pair, "user", at, n))
        for n in range(GROUP_LOG):
            at = now - timedelta(days=2) + timedelta(seconds=172.8 * n)
            measured.append(seeder.accept(members[n % len(members)].id, group_id, "group", at, n))
        for n in range(3):
            measured.append(seeder.accept(peer2.id, reader.id, "user", now, n))
        await seeder.write(measured)
        await seeder.heads()  # message_service continues these numbers from the heads
        ctx.bench.inserted_directly += len(measured)
        for i in range(WARM):  # the warm conversation: through the API, so it is cached
            sender, receiver = (reader, peer3) if i % 2 else (peer3, reader)
            reply = await ctx.api.call(
                "POST",
                "/v1/messages",
                token=sender.token,
                json={"to_user_id": receiver.id, "content": make_content("warm", i, 120)},
            )
            if reply.status != 201:
                return [Row("6", "history", status=f"failed: send answered {reply.status}")]
        day_ago = now - timedelta(days=1)
        offline = {
            receiver: max(
                m.seq for m in measured if m.receiver_id == receiver and m.created_at < day_ago
            )
            for receiver in (reader.id, group_id)
        }
        deep_edge = sorted(m.created_at for m in measured if m.receiver_id in (reader.id, peer.id))
        since = deep_edge[len(deep_edge) // 4].isoformat()
        until = deep_edge[len(deep_edge) // 4 + 300].isoformat()

        base = now - timedelta(days=60)
        state: dict[str, int] = {}
        previous: dict[str, float] = {}
        for size in sizes:
            if ctx.remaining_s() < 90:
                rows.append(not_available("6", f"history at {size:,} stored", "time budget"))
                continue
            cpu_before = _store_cpu_s(run_dir)
            writer_before, written_before = seeder.writer_s + seeder.ledger_s, seeder.written
            started = time.monotonic()
            await grow_to(seeder, size, base, state)
            await seeder.heads()
            seeded_s = time.monotonic() - started
            grown = seeder.written - written_before
            ctx.bench.inserted_directly += grown
            cpu = _store_cpu_s(run_dir) - cpu_before
            ctx.log(
                f"  [6] {seeder.written:,} messages stored (+{grown:,} in {seeded_s:.0f}s: "
                f"writer {seeder.writer_s:.0f}s, ledger {seeder.ledger_s:.0f}s so far)"
            )
            if grown:
                spent = seeder.writer_s + seeder.ledger_s - writer_before
                ctx.log(
                    f"  [6] seeding: {grown / max(spent, 1e-9):,.0f} msg/s (messages + ledger), "
                    f"store CPU {cpu * 1000 / grown:.3f} ms per message"
                )
                rows.append(
                    Row(
                        "6",
                        f"  seeding to {size:,}: messages + ledger written",
                        grown / max(spent, 1e-9),
                        "msg/s",
                        ">= 5,000 msg/s",
                        grown / spent >= 5000,
                        note=f"{grown:,} messages (each also a ledger entry) in {spent:.0f}s; "
                        f"store CPU {cpu * 1000 / grown:.3f} ms per message (messages + ledger)",
                        detail={"store_cpu_ms_per_message": cpu * 1000 / grown},
                    )
                )
            # A walk to a cursor more than 1,000 messages back in the deep conversation.
            cursor = None
            params = {"with_user": peer.id, "limit": "100"}
            for _ in range(11):
                page = await ctx.api.call("GET", "/v1/messages", token=reader.token, params=params)
                cursor = page.body["next_cursor"]
                params = {"with_user": peer.id, "limit": "100", "before": cursor}
            newest, deep = READ_TARGET_MS, DEEP_TARGET_MS
            window = {"with_user": peer.id, "since": since, "until": until}
            sync = {"cursor": _sync_cursor(offline), "limit": "100"}
            reads: list[tuple[str, dict[str, str], Any, str, float]] = [
                ("newest page, warm (cache)", {"with_user": peer3.id}, reader, "h", newest),
                (
                    "newest page, cold (2,000-message pair)",
                    {"with_user": peer.id},
                    reader,
                    "h",
                    newest,
                ),
                ("newest page, cold, fresh one-way", {"with_user": peer2.id}, reader, "h", newest),
                ("newest page, cold, group of 50", {"group": group_id}, reader, "h", newest),
                (
                    "deep page (> 1,000 back)",
                    {"with_user": peer.id, "before": str(cursor)},
                    reader,
                    "h",
                    deep,
                ),
                ("date-filtered page (since/until)", window, reader, "h", deep),
                ("sync page after a day offline", sync, reader, "s", deep),
                (
                    "newest page after a cache eviction",
                    {"with_user": peer3.id},
                    reader,
                    "evicted",
                    newest,
                ),
            ]
            for name, params, user, kind, target in reads:
                if kind == "evicted":
                    conv = conversation_id("user", reader.id, peer3.id)
                    await _evict(settings.redis_url, keys, conv)
                path = "/v1/sync" if kind == "s" else "/v1/messages"
                runs: list[Latency | None] = []
                problems: list[str] = []
                # One request first: offer at most half of what its time allows, so the
                # figure is a read's latency, not a queue's (the machine is shared).
                started = time.perf_counter()
                await steady_get(ctx, path, params, user.token, 1.0, 1.0)
                one_s = time.perf_counter() - started
                rate = min(float(ctx.plan.history_newest_rate), 0.5 / max(one_s, 1e-3))
                for _ in range(ctx.plan.runs):
                    latency, found = await steady_get(
                        ctx, path, params, user.token, rate, ctx.plan.history_duration_s
                    )
                    runs.append(latency)
                    problems += found
                latency = median_latency(runs)
                growth = ""
                if latency and name in previous:
                    growth = f"; x{latency.p99_ms / previous[name]:.2f} vs {sizes[0]:,}"
                if latency:
                    previous.setdefault(name, latency.p99_ms)
                ctx.log(f"  [6] {size:,} {name}: {latency.short() if latency else '-'}{growth}")
                rows.append(
                    Row(
                        "6",
                        f"  at {size:,}: {name}",
                        latency.p99_ms if latency else None,
                        "ms p99",
                        f"< {target:.0f} ms p99",
                        (latency.p99_ms < target) if latency else False,
                        [r.p99_ms for r in runs if r],
                        status="" if latency else "failed: no answer",
                        note=(latency.short() if latency else "")
                        + f" at {rate:.2g} req/s{growth}"
                        + (f"; problems: {sorted(set(problems))[:3]}" if problems else ""),
                        detail={"latency": latency.as_dict() if latency else None},
                    )
                )
            # First sends: receivers message_service has not seen since it started...
            fresh = [u for u in ctx.users[ctx.plan.pairs : -4] if u.id not in seeder.seqs]
            fresh = [u for u in fresh if u not in members][:FIRST_SENDS]
            for u in fresh:
                seeder.seqs[u.id] = (1, 0)  # used now: not unseen at the next size
            unseen = await _timed_sends(ctx, reader, fresh, 10.0) if fresh else None
            # ...and to receivers with history right after message_service restarts.
            await asyncio.to_thread(ctx.bench.system.services["message_service"].restart)
            after_restart = await _timed_sends(
                ctx, peer2, [reader, peer, peer3, *members[:17]], 10.0
            )
            for name, latency in (
                ("first send to a receiver unseen since start", unseen),
                ("first sends after a message_service restart", after_restart),
            ):
                ctx.log(f"  [6] {size:,} {name}: {latency.short() if latency else '-'}")
                rows.append(
                    Row(
                        "6",
                        f"  at {size:,}: {name}",
                        latency.p99_ms if latency else None,
                        "ms p99",
                        "< 20 ms p99",
                        (latency.p99_ms < 20) if latency else False,
                        status="" if latency else "not run: no unseen users left",
                        note=(latency.short() if latency else "")
                        + f" ({latency.count if latency else 0} sends at 10/s)",
                    )
                )
            disk = await _disk_bytes(tuple(sql_urls), ctx.bench.database)
            pss = _store_pss_bytes(run_dir)
            stored = seeder.written
            ctx.log(
                f"  [6] {size:,} disk {disk / stored:,.0f} B/message, store PSS "
                f"{pss / 2**20:,.0f} MiB; writer "
                f"{seeder.written / max(seeder.writer_s, 1e-9):,.0f} "
                f"msg/s, ledger {seeder.written / max(seeder.ledger_s, 1e-9):,.0f} entries/s"
            )
            rows.append(
                Row(
                    "6",
                    f"  at {size:,}: store disk per message",
                    disk / stored,
                    "bytes",
                    note=f"{disk / 2**20:,.0f} MiB for {stored:,} messages + their ledger entries "
                    f"(tables + indexes, PostgreSQL); store memory (PSS of FerretDB + PostgreSQL) "
                    f"{pss / 2**20:,.0f} MiB = {pss / stored:,.0f} bytes per message",
                    detail={"disk_bytes": disk, "store_pss_bytes": pss, "messages": stored},
                )
            )
    finally:
        await shards.close()
    return rows


async def _evict(redis_url: str, keys: RedisKeys, conversation: str) -> None:
    """Drop a conversation's recent-messages cache, as an eviction or a flush would."""
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    try:
        await redis.delete(keys.recent_messages(conversation), keys.recent_bodies(conversation))
    finally:
        await redis.aclose()

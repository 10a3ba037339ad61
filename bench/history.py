"""Scenario 6: history pages while the stored messages grow (10^4 -> 10^5 ...).

Seeding writes straight into every shard's `messages` collection in bulk (not
through the API: a hundred thousand sends would take longer than the whole
suite may), with documents shaped exactly like the persister's
(persister/repository.py `message_document`), routed by the same jump hash:
- one seeded conversation (a sender -> a receiver's inbox, seq 1..n, created a
  month ago, one second apart), whose deep pages only storage can answer;
- filler messages to other receivers, spread over both shards, so the
  collections reach each size of the plan.
The newest page is measured on a conversation filled through the API just
before (so the recent-messages cache holds it); the deep page with `until` on
the seeded conversation. Both at a steady request rate, p99 from the client.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.environment import NotAvailable, require_route
from bench.loadgen import make_content
from bench.report import Row, not_available
from bench.stats import Latency, median, median_latency
from libs.ids import new_id
from libs.storage.routing import ShardRouter

SEEDED_CONVERSATION = 2_000
INSERT_BATCH = 2_000


def seeded_document(receiver_id: str, sender_id: str, seq: int, created_at: datetime) -> dict:
    """A message document as the persister writes it."""
    return {
        "_id": new_id(),
        "receiver_kind": "user",
        "receiver_id": receiver_id,
        "seq": seq,
        "sender_id": sender_id,
        "content": make_content("seed", seq, 200),
        "client_msg_id": None,
        "client_sent_at": None,
        "created_at": created_at,
    }


async def insert_documents(collections: list[Any], docs: list[dict]) -> None:
    router = ShardRouter(list(range(len(collections))))
    by_shard: dict[int, list[dict]] = {}
    for doc in docs:
        by_shard.setdefault(router.index_for(doc["receiver_id"]), []).append(doc)
    await asyncio.gather(
        *(collections[i].insert_many(batch, ordered=False) for i, batch in by_shard.items())
    )


async def grow_to(ctx: Any, total: int, state: dict[str, int]) -> float:
    """Add filler messages until the shards hold `total`; returns seconds spent."""
    started = time.monotonic()
    collections = ctx.bench.messages_collections()
    have = sum(await ctx.bench.persisted_count())
    base = datetime.now(UTC) - timedelta(days=60)
    while have < total:
        count = min(INSERT_BATCH, total - have)
        docs = []
        for _ in range(count):
            n = state["filler"] = state.get("filler", 0) + 1
            # 500 filler inboxes of ~equal size, each with its own gap-free seq.
            receiver = f"filler-{n % 500}"
            docs.append(
                seeded_document(
                    receiver, "filler-sender", n // 500 + 1, base + timedelta(milliseconds=n)
                )
            )
        await insert_documents(collections, docs)
        ctx.bench.inserted_directly += count
        have += count
    return time.monotonic() - started


async def steady_get(
    ctx: Any,
    path: str,
    params: dict[str, str],
    token: str,
    rate: float,
    duration_s: float,
    expect_items: int,
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
        items = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(items, list) or len(items) < expect_items:
            problems.append(f"page of {len(items) if isinstance(items, list) else '?'} items")
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


async def history(ctx: Any) -> list[Row]:
    sizes = ctx.plan.history_sizes
    try:
        if ctx.seed_error:
            raise NotAvailable(ctx.seed_error)
        if len(ctx.users) < 4:
            raise NotAvailable("fewer than 4 users seeded")
        reader, peer, deep_reader, deep_peer = ctx.users[-4:]
        await require_route(
            ctx.api,
            "GET",
            "/v1/messages",
            reader.token,
            "history",
            params={"with_user": peer.id, "limit": "1"},
        )
    except NotAvailable as exc:
        return [
            not_available(
                "6", f"history at {n:,} stored: newest / deep page", str(exc), "newest < 10 ms p99"
            )
            for n in sizes
        ]
    # The cached conversation: filled through the API, both directions.
    for i in range(60):
        sender, receiver = (reader, peer) if i % 2 else (peer, reader)
        reply = await ctx.api.call(
            "POST",
            "/v1/messages",
            token=sender.token,
            json={"to_user_id": receiver.id, "content": make_content("hist", i, 200)},
        )
        if reply.status != 201:
            return [Row("6", "history", status=f"failed: send answered {reply.status}")]
    # The seeded conversation: deep_peer -> deep_reader's inbox, a month old.
    base = datetime.now(UTC) - timedelta(days=30)
    docs = [
        seeded_document(deep_reader.id, deep_peer.id, seq, base + timedelta(seconds=seq))
        for seq in range(1, SEEDED_CONVERSATION + 1)
    ]
    await insert_documents(ctx.bench.messages_collections(), docs)
    ctx.bench.inserted_directly += len(docs)  # the storage check counts them too
    # A page well inside it: the 50 messages before the 200th.
    until = (base + timedelta(seconds=200)).isoformat().replace("+00:00", "Z")
    state: dict[str, int] = {}
    rows: list[Row] = []
    previous_deep: float | None = None
    for size in sizes:
        if ctx.remaining_s() < 60:
            rows.append(not_available("6", f"history at {size:,} stored", "time budget"))
            continue
        seeded_s = await grow_to(ctx, size, state)
        ctx.log(f"  [6] {size:,} messages stored (seeding took {seeded_s:.1f}s)")
        newest_runs: list[Latency | None] = []
        deep_runs: list[Latency | None] = []
        problems: set[str] = set()
        deep_params = {"with_user": deep_peer.id, "until": until, "limit": "50"}
        # A deep page on FerretDB costs a scan of the collection: measure one first and
        # offer 80% of what that speed allows, so the rate stays steady (no queue).
        started = time.perf_counter()
        _, warm_problems = await steady_get(
            ctx, "/v1/messages", deep_params, deep_reader.token, 1.0, 1.0, 50
        )
        one_deep_s = time.perf_counter() - started
        deep_rate = min(float(ctx.plan.history_deep_rate), 0.8 / max(one_deep_s, 1e-3))
        deep_count = int(min(20, max(2, deep_rate * 30)))
        deep_duration = deep_count / deep_rate
        runs = ctx.plan.runs if deep_duration * ctx.plan.runs < 60 else 1
        for _ in range(runs):
            newest, p1 = await steady_get(
                ctx,
                "/v1/messages",
                {"with_user": peer.id, "limit": "50"},
                reader.token,
                ctx.plan.history_newest_rate,
                ctx.plan.history_duration_s,
                50,
            )
            deep, p2 = await steady_get(
                ctx, "/v1/messages", deep_params, deep_reader.token, deep_rate, deep_duration, 50
            )
            newest_runs.append(newest)
            deep_runs.append(deep)
            problems.update(p1 + p2 + warm_problems)
            ctx.log(
                f"  [6] {size:,}: newest {newest.short() if newest else '-'}; "
                f"deep ({deep_rate:.2g} req/s) {deep.short() if deep else '-'}"
                + (f" {sorted(set(p1 + p2))}" if p1 or p2 else "")
            )
        newest = median_latency(newest_runs)
        deep = median_latency(deep_runs)
        note = f"seeded directly in bulk ({seeded_s:.0f}s)"
        if problems:
            note += "; problems: " + ", ".join(sorted(problems))[:200]
        rows.append(
            Row(
                "6",
                f"history at {size:,} stored: newest page (cache)",
                newest.p99_ms if newest else None,
                "ms p99",
                "< 10 ms p99",
                (newest.p99_ms < 10) if newest else False,
                [r.p99_ms for r in newest_runs if r],
                status="" if newest else "failed: no answer",
                note=(newest.short() if newest else "")
                + f" at {ctx.plan.history_newest_rate} req/s",
                detail={"latency": newest.as_dict() if newest else None},
            )
        )
        growth = ""
        if deep and previous_deep:
            growth = f"; x{deep.p99_ms / previous_deep:.1f} vs the previous size"
        rows.append(
            Row(
                "6",
                f"  history at {size:,} stored: deep page (storage)",
                deep.p99_ms if deep else None,
                "ms p99",
                "-",
                None,
                [r.p99_ms for r in deep_runs if r],
                status="" if deep else "failed: no answer",
                note=(deep.short() if deep else "")
                + f" at {deep_rate:.2g} req/s ({deep_count} requests x {runs} run(s)); "
                + note
                + growth,
                detail={"latency": deep.as_dict() if deep else None},
            )
        )
        previous_deep = deep.p99_ms if deep else None
    _ = median
    return rows

"""Every query the message read model and the acceptance ledger send is an index lookup.

The test drives the real code (history pages of every kind, sync over messages and
issue 16's events, the ledger's position, direction and original lookups, a message
by id) with a command listener
on the clients, so any query added later is caught too. Each recorded `find` is then
explained on the local store (FerretDB on PostgreSQL answers `explain` with
PostgreSQL's plan of the SQL it runs): the whole filter must be pushed down
(top-level equality on scalars only: FerretDB pushes nothing else) and the plan
must use an index and contain no sequential scan.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from libs.contracts.messages import position
from libs.readmodels import messages as readmodel
from libs.readmodels.messages import Bound, Conversation, find_message
from message_service.repository import LEDGER, dedupe_key
from tests.readmodels.conftest import Store


async def _analyze(store: Store) -> None:
    """Give PostgreSQL's planner statistics, as autovacuum would on a live store."""
    for url, database in zip(store.shards.sql_urls, store.shards.databases, strict=True):
        connection = await asyncpg.connect(url)
        try:
            tables = await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1", database.name
            )
            for row in tables:
                await connection.execute(f'ANALYZE "{database.name}"."{row["tablename"]}"')
        finally:
            await connection.close()


async def _drive_every_read(store: Store) -> None:
    reader = store.reader
    direct = Conversation.direct("u0", "u1")
    newest = await reader.history(direct, lower=None, upper=None, limit=50, ascending=False)
    edge = newest.messages[-1]
    edge_pos = position(edge.created_at, edge.id)
    hints = newest.hints(edge, downward=True)
    await reader.history(
        direct, lower=None, upper=Bound(edge_pos, False), limit=50, ascending=False, hints=hints
    )
    await reader.history(
        direct, lower=None, upper=Bound(edge_pos, False), limit=50, ascending=False
    )
    await reader.history(direct, lower=Bound(edge_pos, False), upper=None, limit=20, ascending=True)
    await reader.history(
        direct,
        lower=Bound(edge_pos[:16], True),
        upper=Bound(edge_pos, False),
        limit=10,
        ascending=False,
    )
    group = Conversation.group("g0")
    await reader.history(group, lower=None, upper=None, limit=50, ascending=False)
    await reader.sync(["u1", "g0"], {"u1": 0, "g0": 10}, 100)
    # The group log past the bucket whose last slot is an event (seq 63).
    await reader.history(group, lower=Bound("0", True), upper=None, limit=80, ascending=True)
    await store.ledger.load_positions(["u1", "g0", "never-seen"])
    await store.ledger.load_directions([("u1", "u0"), ("u1", "never-seen")])
    original = newest.messages[0]
    await store.ledger.originals(
        [
            (
                original.receiver.id,
                dedupe_key(original.receiver.id, original.sender_id, None, original.id),
                original.id,
            )
        ]
    )
    await find_message(store.shards, original.id)


def _fully_pushable(query: dict[str, Any]) -> bool:
    return bool(query) and all(
        not key.startswith("$") and "." not in key and isinstance(value, str | int)
        for key, value in query.items()
    )


async def test_every_read_model_and_ledger_query_uses_an_index(store: Store) -> None:
    assert store.shards.sql_urls, "the local store is FerretDB on PostgreSQL (MONGO_SHARDS_SQL)"
    # Enough rows (and heads: ~3,000 directions) that a scan would be the planner's
    # choice if no index served.
    pairs = [(f"u{n % 60}", f"u{(n // 60) % 60}") for n in range(3600)]
    direct = await store.send_pairs([p for p in pairs if p[0] != p[1]])
    await store.send_pairs([("u0", "u1"), ("u1", "u0"), ("u0", "u1")] * 70)
    group_messages = await store.send_pairs([(f"u{n % 5}", "g0") for n in range(62)], kind="group")
    await store.edit(group_messages[0], "edited")  # an event at seq 63: a bucket's last slot
    await store.send_pairs([(f"u{n % 5}", "g0") for n in range(238)], kind="group")
    await store.edits(
        [m for m in group_messages if m.sender_id == "u1"][:3], "edited again"
    )  # the group log: events among messages
    # Enough events that a scan of conversation_events would be the planner's choice.
    await store.edits(direct[:1500], "edited")
    await store.write_heads()
    await store.send_pairs([("u0", "u1")] * 5)  # the ledger runs ahead of the heads
    await _analyze(store)

    store.recorder.recording = True
    await _drive_every_read(store)
    store.recorder.recording = False

    finds = store.recorder.finds
    seen_shapes = {(collection, tuple(sorted(query))) for _, collection, query in finds}
    assert {c for c, _ in seen_shapes} == {
        readmodel.MESSAGES,
        readmodel.EVENTS,
        readmodel.HEADS,
        LEDGER,
    }
    assert (readmodel.EVENTS, ("rb", "receiver_id")) in seen_shapes
    assert (readmodel.EVENTS, ("rb", "receiver_id", "seq")) in seen_shapes
    assert (readmodel.MESSAGES, ("db", "receiver_id")) in seen_shapes
    assert (readmodel.MESSAGES, ("rb", "receiver_id")) in seen_shapes
    assert (LEDGER, ("key", "receiver_id")) in seen_shapes
    assert (LEDGER, ("message_id", "receiver_id")) in seen_shapes

    explained: set[tuple[str, str, str]] = set()
    for database_name, collection, query in finds:
        assert _fully_pushable(query), f"{collection} {query} is not equality on scalars"
        shape = (database_name, collection, ",".join(sorted(query)))
        if shape in explained:
            continue
        explained.add(shape)
        for shard_database in store.shards.databases:
            answer = await shard_database.command(
                "explain", {"find": collection, "filter": query}, verbosity="queryPlanner"
            )
            plan = json.dumps(answer["queryPlanner"])
            assert answer.get("filterPushdown") is True, (collection, query, answer)
            assert "Seq Scan" not in plan, f"{collection} {query} scans: {plan}"
            assert "Index Scan" in plan, f"{collection} {query} uses no index: {plan}"
    assert len(explained) >= 8


async def test_the_purge_of_edit_events_is_an_index_lookup(store: Store) -> None:
    """A delete's purge of the message's edit events (an update) filters by `mid`."""
    assert store.shards.sql_urls
    pairs = [(f"u{n % 30}", f"u{(n // 30) % 30}") for n in range(900)]
    sent = await store.send_pairs([p for p in pairs if p[0] != p[1]])
    await store.edits(sent[:600], "edited")
    await _analyze(store)
    query = readmodel.edits_of(sent[0].receiver_id, sent[0].message_id)
    pushed = {k: v for k, v in query.items() if "." not in k}
    assert set(pushed) == {"receiver_id", "mid"}
    database = store.shards.databases[store.shards.shard_index(sent[0].receiver_id)]
    answer = await database.command(
        "explain", {"find": readmodel.EVENTS, "filter": query}, verbosity="queryPlanner"
    )
    plan = json.dumps(answer["queryPlanner"])
    assert "Seq Scan" not in plan, plan
    assert "Index Scan" in plan, plan
    found = await database[readmodel.EVENTS].find(query).to_list(None)
    assert [doc["_id"] for doc in found]
    assert all(doc["mid"] == sent[0].message_id for doc in found)

"""Seq gap-free under concurrency, long-conversation pagination, sync, shard spread."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta

from pymongo import AsyncMongoClient

from libs.settings import ServiceSettings
from libs.storage.routing import ShardRouter
from tests.messages.conftest import (
    all_history,
    create_group,
    eventually,
    history,
    send_ok,
)
from tests.support.client import Api, User


async def _send_many(api: Api, jobs: list[tuple[User, dict]], concurrency: int) -> list[dict]:
    gate = asyncio.Semaphore(concurrency)

    async def one(sender: User, kw: dict) -> dict:
        async with gate:
            return await send_ok(api, sender, **kw)

    return await asyncio.gather(*(one(sender, kw) for sender, kw in jobs))


async def test_seq_is_gap_free_per_receiver_under_concurrent_senders(api: Api) -> None:
    bob = await api.new_user("bob")
    senders = [await api.new_user("s") for _ in range(8)]
    group_id = await create_group(api, senders[0], senders[1:])
    jobs = [
        (s, {"to_user": bob.id, "content": f"{s.username}-{i}"}) for s in senders for i in range(25)
    ]
    jobs += [
        (s, {"to_group": group_id, "content": f"g-{s.username}-{i}"})
        for s in senders
        for i in range(25)
    ]
    random.shuffle(jobs)
    replies = await _send_many(api, jobs, concurrency=40)
    for receiver_id in (bob.id, group_id):
        seqs = sorted(r["seq"] for r in replies if r["receiver"]["id"] == receiver_id)
        assert seqs == list(range(1, 201))
    assert len({r["id"] for r in replies}) == len(replies)
    # Within a receiver, the conversation order is the seq order.
    log = await all_history(api, senders[3], group=group_id)
    assert [m["seq"] for m in log] == list(range(200, 0, -1))
    # Per sender, the messages keep the order they were sent in.
    inbox_of_bob = [r for r in replies if r["receiver"]["id"] == bob.id]
    assert len(inbox_of_bob) == 200


async def test_paging_a_long_conversation_with_dates_while_messages_arrive(api: Api) -> None:
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    jobs = [
        ((ada, {"to_user": bob.id}) if i % 3 else (bob, {"to_user": ada.id})) for i in range(1500)
    ]
    jobs = [(s, {**kw, "content": f"n{i}"}) for i, (s, kw) in enumerate(jobs)]
    sent = await _send_many(api, jobs, concurrency=20)
    by_id = {m["id"]: m for m in sent}

    stop = asyncio.Event()
    arrived: list[dict] = []

    async def keep_sending() -> None:
        n = 0
        while not stop.is_set():
            arrived.append(await send_ok(api, ada, to_user=bob.id, content=f"late{n}"))
            n += 1

    background = asyncio.create_task(keep_sending())
    try:
        # The whole conversation, backwards in pages of 100.
        seen = await all_history(api, bob, page_size=100, with_user=ada.id)
        # A date window, in pages of 37.
        times = sorted(datetime.fromisoformat(m["created_at"]) for m in sent)
        since, until = times[300], times[1100]
        window = await all_history(
            api,
            ada,
            page_size=37,
            with_user=bob.id,
            since=since.isoformat(),
            until=until.isoformat(),
        )
    finally:
        stop.set()
        await background
    ids = [m["id"] for m in seen]
    repeated = {i for i in ids if ids.count(i) > 1}
    assert not repeated, "a message was repeated across pages: " + str(
        [(n, m["id"], m["created_at"], m["seq"]) for n, m in enumerate(seen) if m["id"] in repeated]
    )
    assert set(by_id) <= set(ids), "a message was skipped"
    assert set(ids) - set(by_id) <= {m["id"] for m in arrived}
    keys = [(datetime.fromisoformat(m["created_at"]), m["id"]) for m in seen]
    assert keys == sorted(keys, reverse=True)

    expected = {m["id"] for m in sent if since <= datetime.fromisoformat(m["created_at"]) < until}
    window_ids = [m["id"] for m in window]
    assert len(window_ids) == len(set(window_ids))
    assert set(window_ids) == expected
    assert len(expected) >= 800 - 1  # created_at is strictly increasing per receiver only

    # Forward paging with `after` from the oldest message covers the same messages.
    oldest = await history(
        api,
        ada,
        with_user=bob.id,
        limit=100,
        until=(times[0] + timedelta(milliseconds=1)).isoformat(),
    )
    assert oldest.status == 200
    assert oldest.body["has_more"] is False  # the first millisecond (one or more messages)
    forward: list[dict] = list(oldest.body["messages"])
    cursor = oldest.body["prev_cursor"]  # its newest edge: `after` it repeats nothing
    while True:
        page = await history(api, ada, with_user=bob.id, limit=100, after=cursor)
        assert page.status == 200
        chunk = page.body["messages"]
        if not chunk:
            break
        stamps = [(datetime.fromisoformat(m["created_at"]), m["id"]) for m in chunk]
        assert stamps == sorted(stamps, reverse=True)
        forward += chunk
        cursor = page.body["next_cursor"]
    forward_ids = [m["id"] for m in forward]
    twice = {i for i in forward_ids if forward_ids.count(i) > 1}
    assert not twice, "a message was repeated across forward pages: " + str(
        [(n, m["id"], m["created_at"], m["seq"]) for n, m in enumerate(forward) if m["id"] in twice]
    )
    assert set(by_id) <= set(forward_ids)


async def _sync_all(api: Api, user: User, cursor: str | None, limit: int) -> tuple[list[dict], str]:
    messages: list[dict] = []
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        reply = await api.call("GET", "/v1/sync", token=user.token, params=params)
        assert reply.status == 200, reply
        messages += reply.body["messages"]
        cursor = reply.body["cursor"]
        if not reply.body["has_more"]:
            return messages, cursor


async def test_sync_loses_nothing_and_repeats_nothing(api: Api) -> None:
    ada, bob, cat = await api.new_user("ada"), await api.new_user("bob"), await api.new_user("cat")
    g1 = await create_group(api, bob, [ada])
    g2 = await create_group(api, cat, [ada, bob])
    jobs = [
        (bob, {"to_user": ada.id}),
        (cat, {"to_user": ada.id}),
        (bob, {"to_group": g1}),
        (cat, {"to_group": g2}),
        (ada, {"to_group": g2}),
        (ada, {"to_user": bob.id}),
    ]
    first = await _send_many(
        api, [(s, {**kw, "content": f"a{i}"}) for i in range(20) for s, kw in jobs], 10
    )
    addressed = {m["id"] for m in first if m["receiver"]["id"] in (ada.id, g1, g2)}

    got: list[dict] = []
    cursor: str | None = None

    async def drain() -> set[str]:
        nonlocal cursor
        chunk, cursor = await _sync_all(api, ada, cursor, limit=7)
        got.extend(chunk)
        return {m["id"] for m in got}

    seen = await eventually(drain, lambda ids: addressed <= ids)
    assert seen == addressed
    ids = [m["id"] for m in got]
    assert len(ids) == len(set(ids))
    for receiver_id in (ada.id, g1, g2):
        seqs = [m["seq"] for m in got if m["receiver"]["id"] == receiver_id]
        assert seqs == list(range(1, len(seqs) + 1))

    second = await _send_many(
        api, [(s, {**kw, "content": f"b{i}"}) for i in range(5) for s, kw in jobs], 10
    )
    more = {m["id"] for m in second if m["receiver"]["id"] in (ada.id, g1, g2)}
    seen = await eventually(drain, lambda ids: (addressed | more) <= ids)
    assert seen == addressed | more
    assert len(got) == len(seen)
    bad = await api.call("GET", "/v1/sync", token=ada.token, params={"cursor": "%%%"})
    assert bad.status == 422


async def test_messages_are_spread_over_both_shards_by_receiver(api: Api, namespace: str) -> None:
    sender = await api.new_user("spread")
    receivers = [await api.new_user("r") for _ in range(12)]
    sent = await _send_many(
        api, [(sender, {"to_user": r.id, "content": "spread"}) for r in receivers], 12
    )
    settings = ServiceSettings()
    clients = [AsyncMongoClient(uri, tz_aware=True) for uri in settings.mongo_shards]
    assert len(clients) >= 2
    router = ShardRouter(list(range(len(clients))))
    try:
        databases = [c[f"{settings.mongo_database}_{namespace}"] for c in clients]

        async def stored() -> list[set[str]]:
            return [
                {d["_id"] async for d in db["messages"].find({"sender_id": sender.id})}
                for db in databases
            ]

        on_shard = await eventually(stored, lambda s: sum(map(len, s)) == len(sent))
        for message in sent:
            home = router.shard_for(message["receiver"]["id"])
            assert message["id"] in on_shard[home]
            assert all(message["id"] not in ids for i, ids in enumerate(on_shard) if i != home)
        assert all(on_shard), "every shard holds some of the messages"
    finally:
        for client in clients:
            await client.close()

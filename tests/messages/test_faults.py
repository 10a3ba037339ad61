"""Fault tests: SIGKILL persister, message_service, a FerretDB shard or the PostgreSQL
server under both shards mid-stream, or restart that server cleanly (`down` + `up`).

A stream of 2,000 messages from several senders to users on both shards and to a
group; clients retry 503/504 with the same client_msg_id, as real clients do.
After the victim is back: every message that got a 201 is stored exactly once on
its receiver's shard, seqs per receiver are 1..n with no gap, created_at follows
seq, and history shows them all. No answer other than 201, 503 or 504 is seen.
"""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from libs.readmodels.messages import MESSAGES
from libs.settings import ServiceSettings
from libs.storage.routing import ShardRouter
from tests.messages.conftest import all_history, create_group, eventually, send_ok
from tests.support.client import Api, User
from tests.support.system import RunningSystem

STREAM = 2000
KILL_AFTER = 600
SHARD_TO_KILL = "ferretdb-shard1"


def _kill_component(name: str) -> Callable[[], None]:
    """SIGKILL one component of the local stack; return how to bring it back."""
    from deploy.local import processes, stack

    config = stack.StackConfig.from_env()
    component = next(c for c in stack.components(config) if c.name == name)
    record = processes.read_record(stack._pidfile(config, component))
    assert record is not None, f"{name} is not running"
    processes.signal_group(record.pid, signal.SIGKILL)

    def restore() -> None:
        stack.up([name])

    return restore


def _restart_store() -> Callable[[], None]:
    """Stop the PostgreSQL server under both shards as `make down` does; return its start."""
    from deploy.local import stack

    stack.down(["postgres"])
    return lambda: stack.up(["postgres"])


#: How each victim is taken down; each returns how to bring it back.
STORE_FAULTS: dict[str, Callable[[], Callable[[], None]]] = {
    "ferretdb": lambda: _kill_component(SHARD_TO_KILL),
    "postgres": lambda: _kill_component("postgres"),
    "store-restart": _restart_store,
}


async def _users_on_every_shard(api: Api, router: ShardRouter[int], shards: int) -> list[User]:
    users: list[User] = []
    while len({router.shard_for(u.id) for u in users}) < shards or len(users) < 4:
        users.append(await api.new_user("rcv"))
    return users


async def _stored(namespace: str) -> dict[str, list[dict[str, Any]]]:
    """Every stored message by receiver, read from each shard directly."""
    settings = ServiceSettings()
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for uri in settings.mongo_shards:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
        try:
            database = client[f"{settings.mongo_database}_{namespace}"]
            async for doc in database[MESSAGES].find({}, {"content": 0}):
                doc["shard_uri"] = uri
                found[doc["receiver_id"]].append(doc)
        finally:
            await client.close()
    return found


@pytest.mark.fault
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "victim", ["persister", "message_service", "ferretdb", "postgres", "store-restart"]
)
async def test_nothing_acknowledged_is_lost_or_doubled_after_a_kill(
    api: Api, system: RunningSystem, namespace: str, victim: str
) -> None:
    settings = ServiceSettings()
    router: ShardRouter[int] = ShardRouter(list(range(len(settings.mongo_shards))))
    senders = [await api.new_user("snd") for _ in range(4)]
    receivers = await _users_on_every_shard(api, router, len(settings.mongo_shards))
    group_id = await create_group(api, senders[0], senders[1:])
    targets: list[dict[str, str]] = [{"to_user": r.id} for r in receivers]
    targets.append({"to_group": group_id})

    replies: list[dict[str, Any]] = []
    progress = asyncio.Event()
    gate = asyncio.Semaphore(24)

    async def one(index: int) -> None:
        sender = senders[index % len(senders)]
        target = targets[(index // len(senders)) % len(targets)]
        async with gate:
            body = await send_ok(api, sender, content=f"{victim}-{index}", **target)
        replies.append(body)
        if len(replies) >= KILL_AFTER:
            progress.set()

    stream = asyncio.gather(*(one(i) for i in range(STREAM)))
    await progress.wait()
    if victim in STORE_FAULTS:
        restore = await asyncio.to_thread(STORE_FAULTS[victim])
    else:
        process = system.services[victim]
        await asyncio.to_thread(process.kill)
    try:
        await asyncio.sleep(2)
    finally:
        if victim in STORE_FAULTS:
            await asyncio.to_thread(restore)
        else:
            await asyncio.to_thread(process.start)
            await asyncio.to_thread(process.wait_ready, 120)
    await stream

    assert len(replies) == STREAM
    acknowledged = {r["id"]: r for r in replies}
    assert len(acknowledged) == STREAM, "two messages share an id"

    stored = await eventually(
        lambda: _stored(namespace),
        lambda s: sum(len(d) for r, d in s.items() if r in _receiver_ids(replies)) >= STREAM,
        timeout_s=120,
    )
    for receiver_id in _receiver_ids(replies):
        docs = sorted(stored[receiver_id], key=lambda d: d["seq"])
        ids = [d["_id"] for d in docs]
        assert len(ids) == len(set(ids)), "a message is stored twice"
        assert [d["seq"] for d in docs] == list(range(1, len(docs) + 1)), "seq gap"
        created = [d["created_at"] for d in docs]
        assert created == sorted(created)
        assert len(set(created)) == len(created)
        home = settings.mongo_shards[router.shard_for(receiver_id)]
        assert {d["shard_uri"] for d in docs} == {home}
        mine = {r["id"]: r["seq"] for r in replies if r["receiver"]["id"] == receiver_id}
        assert {d["_id"]: d["seq"] for d in docs} == mine

    group_log = await all_history(api, senders[1], group=group_id)
    assert {m["id"] for m in group_log} == {
        r["id"] for r in replies if r["receiver"]["id"] == group_id
    }
    pair = await all_history(api, receivers[0], with_user=senders[0].id)
    assert {m["id"] for m in pair} == {
        r["id"]
        for r in replies
        if r["receiver"]["id"] == receivers[0].id and r["sender_id"] == senders[0].id
    }


def _receiver_ids(replies: list[dict[str, Any]]) -> set[str]:
    return {r["receiver"]["id"] for r in replies}

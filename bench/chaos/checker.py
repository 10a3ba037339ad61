"""The chaos run's verdict: the clients' records against storage and against /v1/sync.

Owns the invariants of `make chaos` and how each is measured:

- lost: an acknowledged message (a 201 with id and seq) that is not stored;
- duplicates: one client message (sender, client_msg_id) stored more than once,
  or a stored message whose id, receiver or seq differs from its acknowledgement;
- seq gaps: per receiver (user inbox or group), the stored seqs are not 1..n;
- order: within a stream (one sender, one conversation, one message at a time),
  seqs do not rise with the client's send order;
- convergence: for every client, what its WebSocket holds plus paging GET /v1/sync
  from its own position is not exactly the stored messages of its receivers,
  contiguous per receiver (and the same from the start, for a few clients).

Storage is read directly from every shard (persister's `messages` collection,
through libs.storage.mongo), waiting a bounded time for the persister to catch
up. Every wait is bounded and none is a timing assertion: slowness shows as a
longer run, never as a verdict.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pymongo.errors import PyMongoError

from bench.chaos.clients import Client, Load, SentMessage, parse_content
from gateway.history import encode_sync_cursor
from libs.storage.mongo import MongoShards
from persister.repository import MESSAGES


class StorageUnreadable(Exception):
    """The store could not be read within the check's bound (no verdict on storage)."""


@dataclass
class StoredMessage:
    id: str
    receiver_id: str
    seq: int
    sender_id: str
    client_msg_id: str | None
    stream: int | None
    k: int | None
    shard: int


@dataclass
class Verdict:
    acknowledged: int = 0
    unacknowledged: int = 0
    rejected: int = 0
    stored: int = 0
    lost: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    seq_gaps: list[str] = field(default_factory=list)
    order_violations: list[str] = field(default_factory=list)
    not_converged: list[str] = field(default_factory=list)
    #: Messages a client's WebSocket did not hold after its final resume (a figure).
    ws_missing: int = 0
    ws_unanswered_resumes: int = 0

    @property
    def violations(self) -> dict[str, int]:
        return {
            "acknowledged messages lost": len(self.lost),
            "duplicates stored": len(self.duplicates) + len(self.mismatched),
            "seq gaps": len(self.seq_gaps),
            "per-conversation order broken": len(self.order_violations),
            "clients not converged through sync": len(self.not_converged),
        }

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def examples(self, limit: int = 5) -> dict[str, list[str]]:
        named = {
            "lost": self.lost,
            "duplicates": self.duplicates + self.mismatched,
            "seq_gaps": self.seq_gaps,
            "order": self.order_violations,
            "not_converged": self.not_converged,
        }
        return {k: v[:limit] for k, v in named.items() if v}


async def read_stored(
    mongo_shards: tuple[str, ...], database: str, receivers: list[str]
) -> list[StoredMessage]:
    """Every stored message of the given receivers, from every shard."""
    # The checker's reads scan whole collections on the local store: allow them time.
    shards = MongoShards(mongo_shards, database, socket_timeout_ms=180_000)
    projection = {"receiver_id": 1, "seq": 1, "sender_id": 1, "client_msg_id": 1, "content": 1}

    async def one(index: int) -> list[StoredMessage]:
        # One query per shard: the local store scans a collection for every query.
        collection = shards.collections(MESSAGES)[index]
        docs = await collection.find({"receiver_id": {"$in": receivers}}, projection).to_list(None)
        found = []
        for doc in docs:
            parsed = parse_content(str(doc.get("content", "")))
            found.append(
                StoredMessage(
                    id=str(doc["_id"]),
                    receiver_id=doc["receiver_id"],
                    seq=int(doc["seq"]),
                    sender_id=str(doc.get("sender_id")),
                    client_msg_id=doc.get("client_msg_id"),
                    stream=parsed[0] if parsed else None,
                    k=parsed[1] if parsed else None,
                    shard=index,
                )
            )
        return found

    try:
        parts = await asyncio.gather(*(one(i) for i in range(len(shards))))
    finally:
        await shards.close()
    return [m for part in parts for m in part]


async def wait_for_storage(
    mongo_shards: tuple[str, ...],
    database: str,
    receivers: list[str],
    acked: list[SentMessage],
    timeout_s: float,
) -> list[StoredMessage]:
    """Storage once it holds every acknowledged id, or as it is after timeout_s."""
    wanted = {m.id for m in acked}
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            stored = await read_stored(mongo_shards, database, receivers)
        except PyMongoError:  # a shard still coming back: try again within the bound
            stored = None
        if stored is not None and wanted <= {m.id for m in stored}:
            return stored
        if time.monotonic() >= deadline:
            if stored is None:
                raise StorageUnreadable(f"the store did not answer within {timeout_s:.0f} s")
            return stored
        await asyncio.sleep(2)


def check_storage(load: Load, stored: list[StoredMessage], verdict: Verdict) -> None:
    sent = load.sent()
    acked = [m for m in sent if m.id is not None]
    verdict.acknowledged = len(acked)
    verdict.rejected = sum(1 for m in sent if m.rejected)
    verdict.unacknowledged = len(sent) - len(acked) - verdict.rejected
    verdict.stored = len(stored)

    by_id: dict[str, list[StoredMessage]] = defaultdict(list)
    by_client_id: dict[tuple[str, str], list[StoredMessage]] = defaultdict(list)
    by_receiver: dict[str, list[StoredMessage]] = defaultdict(list)
    for m in stored:
        by_id[m.id].append(m)
        if m.client_msg_id:
            by_client_id[(m.sender_id, m.client_msg_id)].append(m)
        by_receiver[m.receiver_id].append(m)

    for key, copies in by_client_id.items():
        if len(copies) > 1:
            verdict.duplicates.append(
                f"client message {key[1]} of {key[0]} stored {len(copies)} times: "
                + ", ".join(f"{c.receiver_id}#{c.seq}" for c in copies)
            )
    for mid, copies in by_id.items():
        if len(copies) > 1:
            verdict.duplicates.append(f"message id {mid} stored {len(copies)} times")

    for m in acked:
        copies = by_id.get(m.id or "")
        if not copies:
            verdict.lost.append(
                f"{m.id} (stream {m.stream} #{m.k}, {m.receiver_id}#{m.seq}, "
                f"acknowledged after {m.attempts} attempt(s))"
            )
            continue
        copy = copies[0]
        if (copy.receiver_id, copy.seq) != (m.receiver_id, m.seq):
            verdict.mismatched.append(
                f"{m.id} acknowledged as {m.receiver_id}#{m.seq}, stored as "
                f"{copy.receiver_id}#{copy.seq}"
            )

    for receiver in [c.account.id for c in load.clients] + list(load.groups):
        seqs = sorted(m.seq for m in by_receiver.get(receiver, []))
        if seqs != list(range(1, len(seqs) + 1)):
            missing = sorted(set(range(1, (seqs[-1] if seqs else 0) + 1)) - set(seqs))
            verdict.seq_gaps.append(
                f"receiver {receiver}: {len(seqs)} stored, max seq {seqs[-1] if seqs else 0}, "
                f"missing {missing[:10]}, repeated {len(seqs) - len(set(seqs))}"
            )

    for stream in load.streams:
        last_seq = 0
        last_k = -1
        for m in stream.messages:
            if m.seq is None:
                continue
            if m.seq <= last_seq:
                verdict.order_violations.append(
                    f"stream {stream.index}: #{m.k} got seq {m.seq} after #{last_k} got {last_seq}"
                )
            last_seq, last_k = m.seq, m.k


async def check_sync(
    load: Load,
    stored: list[StoredMessage],
    verdict: Verdict,
    *,
    timeout_s: float,
    full_syncs: int,
) -> None:
    """Every client syncs from where its WebSocket left it, as a real client does: what it
    holds plus what /v1/sync gives must be exactly the stored messages of its receivers,
    1..n per receiver. The first `full_syncs` clients also page from the start (the
    MongoDB path of sync, slow on the local store, hence not every client)."""
    by_receiver: dict[str, set[str]] = defaultdict(set)
    for m in stored:
        by_receiver[m.receiver_id].add(m.id)
    gate = asyncio.Semaphore(4)

    async def sync_from(token: str, seqs: dict[str, int]) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        cursor: str | None = encode_sync_cursor(seqs) if seqs else None
        for _ in range(10_000):
            path = "/v1/sync?limit=500" + (f"&cursor={cursor}" if cursor else "")
            page = await load.call_until_ok("GET", path, token=token, deadline_s=timeout_s)
            messages += page["messages"]
            cursor = page["cursor"]
            if not page["has_more"]:
                break
        return messages

    async def one(client: Client, seqs: dict[str, int], held: list[dict[str, Any]]) -> str | None:
        deadline = time.monotonic() + timeout_s
        problem = ""
        while True:
            async with gate:
                try:
                    got = await sync_from(client.account.token, seqs)
                except RuntimeError as exc:
                    got, problem = None, str(exc)
            if got is not None:
                problem = _compare(client.receivers, held + got, by_receiver)
                if not problem:
                    return None
            if time.monotonic() >= deadline:
                return f"user {client.account.id} (from {seqs or 'the start'}): {problem}"
            await asyncio.sleep(2)

    def held_by(client: Client) -> list[dict[str, Any]]:
        return [
            {"id": mid, "seq": seq, "receiver": {"id": receiver}}
            for receiver in client.receivers
            for seq, mid in client.received.get(receiver, {}).items()
        ]

    checks = [
        one(c, {r: c.watermark.get(r, 0) for r in c.receivers}, held_by(c)) for c in load.clients
    ]
    checks += [one(c, {}, []) for c in load.clients[:full_syncs]]
    results = await asyncio.gather(*checks)
    verdict.not_converged = [r for r in results if r]

    for client in load.clients:
        for receiver in client.receivers:
            have = set(client.received.get(receiver, {}).values())
            verdict.ws_missing += len(by_receiver.get(receiver, set()) - have)


def _compare(
    receivers: list[str], got: list[dict[str, Any]], by_receiver: dict[str, set[str]]
) -> str:
    """ "" when `got` holds exactly the stored messages of each receiver, seqs 1..n."""
    seqs: dict[str, dict[int, str]] = defaultdict(dict)
    for m in got:
        known = seqs[m["receiver"]["id"]].setdefault(m["seq"], m["id"])
        if known != m["id"]:
            return f"{m['receiver']['id']}#{m['seq']} is both {known} and {m['id']}"
    for receiver in receivers:
        have = seqs.get(receiver, {})
        if sorted(have) != list(range(1, len(have) + 1)):
            return (
                f"{receiver}: seqs are not 1..n ({len(have)} messages, max {max(have, default=0)})"
            )
        want = by_receiver.get(receiver, set())
        ids = set(have.values())
        if ids != want:
            return (
                f"{receiver}: {len(want - ids)} stored messages missing, "
                f"{len(ids - want)} not stored"
            )
    return ""

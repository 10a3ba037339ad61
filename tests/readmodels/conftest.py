"""A private database on both local shards, with the read model's and the ledger's
collections bootstrapped exactly as the services do (lookup indexes included), and a
writer that stands in for message_service + persister: it assigns seq, dseq and
created_at the way message_service does and writes through the read model's writer.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import monitoring
from redis.asyncio import Redis

from libs.contracts.conversations import ConversationEventPayload, ConversationRef, EventBody
from libs.contracts.keys import RedisKeys
from libs.contracts.messages import MessageAcceptedPayload
from libs.ids import new_id
from libs.readmodels import messages as readmodel
from libs.settings import ServiceSettings
from libs.storage.mongo import MongoShards, bootstrap_collections
from message_service.repository import COLLECTIONS as LEDGER_COLLECTIONS
from message_service.repository import Ledger, ReceiverPosition, dedupe_key
from persister.changes import EventStore


class FindRecorder(monitoring.CommandListener):
    """Every `find` the clients send: (database, collection, filter)."""

    def __init__(self) -> None:
        self.finds: list[tuple[str, str, dict[str, Any]]] = []
        self.recording = False

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.recording and event.command_name == "find":
            self.finds.append(
                (event.database_name, event.command["find"], dict(event.command.get("filter", {})))
            )

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@dataclass
class Store:
    shards: MongoShards
    reader: readmodel.MessageReader
    ledger: Ledger
    recorder: FindRecorder
    #: Last (seq, created_ms) per receiver and dseq per direction, as message_service keeps.
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)
    directions: dict[tuple[str, str], int] = field(default_factory=dict)
    clock: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    async def send(
        self, sender: str, receiver: str, n: int = 1, *, kind: str = "user", step_ms: int = 1000
    ) -> list[MessageAcceptedPayload]:
        """n messages sender -> receiver, accepted, in the ledger and stored."""
        return await self.send_pairs([(sender, receiver)] * n, kind=kind, step_ms=step_ms)

    async def send_pairs(
        self, pairs: list[tuple[str, str]], *, kind: str = "user", step_ms: int = 1000
    ) -> list[MessageAcceptedPayload]:
        """One message per (sender, receiver), in order, written in one batch."""
        sent = []
        for sender, receiver in pairs:
            self.clock += timedelta(milliseconds=step_ms)
            seq = self.positions.get(receiver, (0, 0))[0] + 1
            dseq = None
            if kind == "user":
                dseq = self.directions.get((receiver, sender), 0) + 1
                self.directions[(receiver, sender)] = dseq
            self.positions[receiver] = (seq, int(self.clock.timestamp() * 1000))
            sent.append(
                MessageAcceptedPayload(
                    message_id=new_id(),
                    receiver_kind=kind,  # type: ignore[arg-type]
                    receiver_id=receiver,
                    seq=seq,
                    sender_id=sender,
                    content=f"{sender}->{receiver} #{seq}",
                    created_at=self.clock,
                    dseq=dseq,
                )
            )
        await self.ledger.record(
            [(dedupe_key(m.receiver_id, m.sender_id, None, m.message_id), m) for m in sent]
        )
        await readmodel.MessageWriter(self.shards).insert(sent)
        return sent

    async def edit(self, message: MessageAcceptedPayload, content: str) -> ConversationEventPayload:
        """An edit of `message` (see `edits`)."""
        return (await self.edits([message], content))[0]

    async def edits(
        self, messages: list[MessageAcceptedPayload], content: str, *, step_ms: int = 1000
    ) -> list[ConversationEventPayload]:
        """Edits of `messages`, each logged in its receiver's log (next seq), recorded in
        the ledger, then written and applied by the persister's event store, as
        message_service + persister do."""
        events = []
        for message in messages:
            self.clock += timedelta(milliseconds=step_ms)
            receiver = message.receiver_id
            seq = self.positions.get(receiver, (0, 0))[0] + 1
            self.positions[receiver] = (seq, int(self.clock.timestamp() * 1000))
            peer = message.sender_id if message.receiver_kind == "user" else receiver
            events.append(
                ConversationEventPayload(
                    event_id=new_id(),
                    receiver_kind=message.receiver_kind,
                    receiver_id=receiver,
                    seq=seq,
                    created_at=self.clock,
                    body=EventBody(
                        type="message_edited",
                        actor_id=message.sender_id,
                        conversation=ConversationRef(kind=message.receiver_kind, id=peer),
                        message_id=message.message_id,
                        message_seq=message.seq,
                        content=content,
                        edited_at=self.clock,
                    ),
                    applies=True,
                )
            )
        await self.ledger.record([(f"{e.receiver_id}|event|{e.event_id}", e) for e in events])
        store = EventStore(self.shards)
        await store.insert(events)
        await store.apply_to_messages(events)
        return events

    async def write_heads(self) -> None:
        await self.ledger.advance_counters(
            {r: ReceiverPosition(s, ms) for r, (s, ms) in self.positions.items()},
            dict(self.directions),
        )


@pytest.fixture
async def store(infra: None) -> AsyncIterator[Store]:
    settings = ServiceSettings()
    recorder = FindRecorder()
    shards = MongoShards(
        settings.mongo_shards,
        "rmtest_" + secrets.token_hex(4),
        sql_urls=settings.mongo_shards_sql,
        event_listeners=[recorder],
    )
    await bootstrap_collections(shards, (*readmodel.COLLECTIONS, *LEDGER_COLLECTIONS))
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    keys = RedisKeys("rmtest" + secrets.token_hex(4))  # nothing cached: every read is stored
    try:
        yield Store(shards, readmodel.MessageReader(shards, redis, keys), Ledger(shards), recorder)
    finally:
        for client, database in zip(shards.clients, shards.databases, strict=True):
            await client.drop_database(database.name)
        await shards.close()
        await redis.aclose()

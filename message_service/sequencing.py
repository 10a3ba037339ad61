"""Acceptance of a batch of valid SendMessage commands: dedupe, seq, durable ledger.

Crash-safe per-receiver sequencing (DESIGN.md §4). For one consumer batch:

1. In-memory dedupe (recent keys of the receivers this instance owns) and
   in-batch duplicates answer the earlier message.
2. Claims: one unordered insert of the dedupe keys per shard. A refused claim
   is a retry or a redelivery; its owner's ledger entry (if any) is the answer.
   A claim whose owner was never sequenced (a crash between claim and ledger)
   is ours to sequence: it is the same message redelivered, or a retry whose
   first copy is gone for good.
3. New messages get contiguous seqs after the receiver's last one (known in
   memory while the partition is assigned; else counter + ledger probe) and a
   created_at strictly after the receiver's previous one.
4. Ledger: one unordered insert per shard. Then counters: one $max per receiver
   per batch, written behind the reply (awaited before the next batch's): a
   counter is a starting point for the ledger probe, not the record of seqs.

Only new messages take seqs, and they are decided before the ledger write, so
seqs stay gap-free. A redelivered batch finds every earlier message in the
ledger and re-emits the same (message_id, seq). Any failure forgets the
in-memory positions of the batch's receivers (they are reloaded from MongoDB).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from libs.contracts.messages import MessageAcceptedPayload, SendMessagePayload, from_millis
from libs.logging import get_logger
from message_service.repository import Claim, Ledger, ReceiverPosition, dedupe_key

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Acceptance:
    """The outcome for one command: the accepted message, and whether it is new."""

    message: MessageAcceptedPayload
    fresh: bool


class Sequencer:
    """Per-receiver seqs of the partitions this instance owns, backed by the ledger."""

    def __init__(self, ledger: Ledger, *, dedupe_memory: int = 20_000) -> None:
        self.ledger = ledger
        self.positions: dict[str, ReceiverPosition] = {}
        self.recent: OrderedDict[str, MessageAcceptedPayload] = OrderedDict()
        self.dedupe_memory = dedupe_memory
        self._counters: asyncio.Task[None] | None = None

    async def _advance_counters_behind(self, positions: dict[str, ReceiverPosition]) -> None:
        """Advance the counters off the reply's path: they only shorten the ledger probe
        after a restart (the ledger is the durable record of seqs), so a lost or failed
        counter write costs a longer probe, never a wrong seq. One write in flight."""
        previous, self._counters = (
            self._counters,
            asyncio.create_task(self.ledger.advance_counters(positions)),
        )
        if previous is not None:
            try:
                await previous
            except Exception as exc:  # the next probe finds what the counter missed
                log.warning("sequence counters not advanced", error=f"{type(exc).__name__}: {exc}")

    def forget(self) -> None:
        """Partitions moved: what this instance knew may be stale now."""
        self.positions.clear()
        self.recent.clear()

    def _remember(self, key: str, message: MessageAcceptedPayload) -> None:
        self.recent[key] = message
        self.recent.move_to_end(key)
        while len(self.recent) > self.dedupe_memory:
            self.recent.popitem(last=False)

    async def accept(self, commands: Sequence[SendMessagePayload]) -> list[Acceptance]:
        receivers = {c.receiver_id for c in commands}
        try:
            return await self._accept(commands)
        except BaseException:
            for receiver_id in receivers:
                self.positions.pop(receiver_id, None)
            raise

    async def _accept(self, commands: Sequence[SendMessagePayload]) -> list[Acceptance]:
        keys = [
            dedupe_key(c.receiver_id, c.sender_id, c.client_msg_id, c.message_id) for c in commands
        ]
        results: list[Acceptance | None] = [None] * len(commands)
        first_of_key: dict[str, int] = {}
        aliases: dict[int, int] = {}
        pending: list[int] = []
        for index, key in enumerate(keys):
            known = self.recent.get(key)
            if known is not None:
                results[index] = Acceptance(known, fresh=False)
            elif key in first_of_key:
                aliases[index] = first_of_key[key]
            else:
                first_of_key[key] = index
                pending.append(index)

        if pending:
            claims = {
                i: Claim(keys[i], commands[i].receiver_id, commands[i].message_id) for i in pending
            }
            taken = await self.ledger.claim(list(claims.values()))
            if taken:
                pending = await self._resolve_taken(claims, taken, results)
            await self._sequence(commands, keys, pending, results)

        for index, first in aliases.items():
            earlier = results[first]
            assert earlier is not None
            results[index] = Acceptance(earlier.message, fresh=False)
        final = [r for r in results if r is not None]
        assert len(final) == len(commands)
        return final

    async def _resolve_taken(
        self, claims: dict[int, Claim], taken: set[str], results: list[Acceptance | None]
    ) -> list[int]:
        """Answer retries from the ledger; return the indexes still to sequence."""
        still: list[int] = [i for i, claim in claims.items() if claim.key not in taken]
        refused = {i: claim for i, claim in claims.items() if claim.key in taken}
        owners = await self.ledger.claim_owners(list(refused.values()))
        originals = await self.ledger.accepted_by_message_ids(
            [
                (claim.receiver_id, owners[claim.key])
                for claim in refused.values()
                if claim.key in owners
            ]
        )
        for index, claim in refused.items():
            owner = owners.get(claim.key)
            original = originals.get(owner) if owner is not None else None
            if original is not None and original.receiver_id == claim.receiver_id:
                results[index] = Acceptance(original, fresh=False)
                self._remember(claim.key, original)
                continue
            if owner != claim.message_id:
                log.info("claim taken over", key=claim.key, previous=owner)
                await self.ledger.take_over_claim(claim)
            still.append(index)
        still.sort()
        return still

    async def _sequence(
        self,
        commands: Sequence[SendMessagePayload],
        keys: Sequence[str],
        pending: Sequence[int],
        results: list[Acceptance | None],
    ) -> None:
        if not pending:
            return
        unknown = sorted({commands[i].receiver_id for i in pending} - self.positions.keys())
        if unknown:
            self.positions.update(await self.ledger.load_positions(unknown))
        now_ms = int(time.time() * 1000)
        proposed: dict[str, ReceiverPosition] = {}
        fresh: list[MessageAcceptedPayload] = []
        for index in pending:
            command = commands[index]
            last = proposed.get(command.receiver_id) or self.positions[command.receiver_id]
            nxt = ReceiverPosition(last.seq + 1, max(now_ms, last.created_ms + 1))
            proposed[command.receiver_id] = nxt
            message = MessageAcceptedPayload(
                message_id=command.message_id,
                receiver_kind=command.receiver_kind,
                receiver_id=command.receiver_id,
                seq=nxt.seq,
                sender_id=command.sender_id,
                content=command.content,
                client_msg_id=command.client_msg_id,
                client_sent_at=command.client_sent_at,
                created_at=from_millis(nxt.created_ms),
            )
            results[index] = Acceptance(message, fresh=True)
            fresh.append(message)
        await self.ledger.record(fresh)
        self.positions.update(proposed)
        await self._advance_counters_behind(proposed)
        for index in pending:
            result = results[index]
            assert result is not None
            self._remember(keys[index], result.message)

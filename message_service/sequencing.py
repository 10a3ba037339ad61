"""Acceptance of a batch of valid SendMessage commands: dedupe, seq, durable ledger.

Crash-safe per-receiver sequencing (docs/storage.md). For one consumer batch:

1. In-memory dedupe (recent keys of the receivers this instance owns) and
   in-batch duplicates answer the earlier message.
2. The others get contiguous seqs after their receiver's last one (known in
   memory while the partition is assigned; else counter + ledger probe) and a
   created_at strictly after the receiver's previous one.
3. Ledger: one ordered insert per shard, each entry carrying its dedupe key
   (unique per receiver). Entries up to the first refused one are accepted. A
   refused entry is a retry or a redelivery (its key or message id has an
   entry: that is the answer, and it took no seq) or, if nothing has its key,
   a seq some other writer took (the receiver's position is reloaded). The
   entries after it were not written and are sequenced again, so seqs stay
   gap-free: only an entry that is stored takes a seq.
4. Counters: a $max per receiver, written behind the reply and at most once
   every `counter_interval_s` (the receivers stored since are collected), and
   when partitions move or the service stops: a counter is only the starting
   point of the ledger probe (`Ledger.load_positions` gallops forward from it),
   not the record of seqs, so a lagging counter costs a few reads after a
   restart, never a wrong seq.

A redelivered batch finds every earlier message in the ledger and re-emits the
same (message_id, seq). Any failure forgets the in-memory positions of the
batch's receivers (they are reloaded from MongoDB).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeGuard

from libs.contracts.messages import MessageAcceptedPayload, SendMessagePayload
from libs.logging import get_logger
from message_service.repository import (
    Ledger,
    LogCommand,
    LogRecord,
    Outcome,
    ReceiverPosition,
    entry_id,
    entry_key,
    stamp,
)

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Acceptance:
    """The outcome for one command: the accepted entry (a message or an event), and
    whether it is new."""

    message: LogRecord
    fresh: bool


class Sequencer:
    """Per-receiver seqs of the partitions this instance owns, backed by the ledger."""

    def __init__(
        self, ledger: Ledger, *, dedupe_memory: int = 20_000, counter_interval_s: float = 0.0
    ) -> None:
        self.ledger = ledger
        self.positions: dict[str, ReceiverPosition] = {}
        #: Last dseq of each direct direction (receiver, sender) this instance knows.
        self.directions: dict[tuple[str, str], int] = {}
        self.recent: OrderedDict[str, LogRecord] = OrderedDict()
        self.dedupe_memory = dedupe_memory
        self.counter_interval_s = counter_interval_s
        #: Positions stored in the ledger since their counter was last written.
        self._unwritten: dict[str, ReceiverPosition] = {}
        self._unwritten_directions: dict[tuple[str, str], int] = {}
        self._counters: asyncio.Task[None] | None = None
        self._counters_started = -float("inf")

    async def _advance_counters_behind(self) -> None:
        """Advance the counters off the reply's path, at most once per interval: they
        only shorten the ledger probe after a restart (the ledger is the durable record
        of seqs), so a lagging, lost or failed counter write costs a longer probe, never
        a wrong seq. One write in flight."""
        if not self._unwritten:
            return
        if time.monotonic() - self._counters_started < self.counter_interval_s:
            return
        positions, self._unwritten = self._unwritten, {}
        directions, self._unwritten_directions = self._unwritten_directions, {}
        previous, self._counters = (
            self._counters,
            asyncio.create_task(self.ledger.advance_counters(positions, directions)),
        )
        self._counters_started = time.monotonic()
        await _settled(previous)

    async def flush_counters(self) -> None:
        """Write every counter behind the ledger now (partitions move, shutdown)."""
        previous, self._counters = self._counters, None
        await _settled(previous)
        positions, self._unwritten = self._unwritten, {}
        directions, self._unwritten_directions = self._unwritten_directions, {}
        if positions:
            await _settled(asyncio.create_task(self.ledger.advance_counters(positions, directions)))

    async def forget(self) -> None:
        """Partitions moved: what this instance knew may be stale now."""
        await self.flush_counters()
        self.positions.clear()
        self.directions.clear()
        self.recent.clear()

    async def already_accepted(self, commands: Sequence[SendMessagePayload]) -> set[str]:
        """The message ids, among `commands`, whose entries the ledger already holds
        (from memory, else one lookup per command): a seq was taken for each, so each
        must resolve to its message whatever a check says now."""
        found: set[str] = set()
        wanted: list[tuple[str, str, str]] = []
        for command in commands:
            key = entry_key(command)
            if key in self.recent:
                found.add(command.message_id)
            else:
                wanted.append((command.receiver_id, key, command.message_id))
        if wanted:
            originals = await self.ledger.originals(wanted)
            found.update(
                message_id
                for _, key, message_id in wanted
                if key in originals or message_id in originals
            )
        return found

    def forget_entries(self, entry_ids: set[str]) -> None:
        """Drop these entries from the in-memory dedupe (a deleted message's content
        must not be answered from memory); a retry then finds the purged ledger entry."""
        if not entry_ids:
            return
        for key in [k for k, v in self.recent.items() if entry_id(v) in entry_ids]:
            del self.recent[key]

    def _remember(self, key: str, message: LogRecord) -> None:
        self.recent[key] = message
        self.recent.move_to_end(key)
        while len(self.recent) > self.dedupe_memory:
            self.recent.popitem(last=False)

    async def accept(self, commands: Sequence[LogCommand]) -> list[Acceptance]:
        receivers = {c.receiver_id for c in commands}
        try:
            return await self._accept(commands)
        except BaseException:
            for receiver_id in receivers:
                self.positions.pop(receiver_id, None)
            for direction in [d for d in self.directions if d[0] in receivers]:
                del self.directions[direction]
            raise

    async def _accept(self, commands: Sequence[LogCommand]) -> list[Acceptance]:
        keys = [entry_key(c) for c in commands]
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
            await self._sequence(commands, keys, pending, results)

        for index, first in aliases.items():
            earlier = results[first]
            assert earlier is not None
            results[index] = Acceptance(earlier.message, fresh=False)
        final = [r for r in results if r is not None]
        assert len(final) == len(commands)
        return final

    async def _sequence(
        self,
        commands: Sequence[LogCommand],
        keys: Sequence[str],
        pending: list[int],
        results: list[Acceptance | None],
    ) -> None:
        """Sequence and record `pending` (indexes into `commands`, in order), in rounds
        until every one is stored or answered by its original."""
        reloaded: set[int] = set()
        while pending:
            unknown = sorted({commands[i].receiver_id for i in pending} - self.positions.keys())
            unknown_directions = sorted(
                {_direction(commands[i]) for i in pending if _is_direct_message(commands[i])}
                - self.directions.keys()
            )
            if unknown or unknown_directions:
                positions, directions = await asyncio.gather(
                    self.ledger.load_positions(unknown),
                    self.ledger.load_directions(unknown_directions),
                )
                self.positions.update(positions)
                self.directions.update(directions)
            proposal = self._propose(commands, pending)
            outcomes = await self.ledger.record([(keys[i], proposal[i][1]) for i in pending])
            again: list[int] = []
            refused: list[int] = []
            for index, outcome in zip(pending, outcomes, strict=True):
                position, message = proposal[index]
                if outcome is Outcome.STORED:
                    results[index] = Acceptance(message, fresh=True)
                    self.positions[message.receiver_id] = position
                    self._unwritten[message.receiver_id] = position
                    if isinstance(message, MessageAcceptedPayload) and message.dseq is not None:
                        direction = _direction(commands[index])
                        self.directions[direction] = message.dseq
                        self._unwritten_directions[direction] = message.dseq
                    self._remember(keys[index], message)
                elif outcome is Outcome.REFUSED:
                    refused.append(index)
                else:
                    again.append(index)
            if refused:
                originals = await self.ledger.originals(
                    [(commands[i].receiver_id, keys[i], entry_id(commands[i])) for i in refused]
                )
                for index in refused:
                    original = originals.get(keys[index]) or originals.get(
                        entry_id(commands[index])
                    )
                    if original is not None and original.receiver_id == commands[index].receiver_id:
                        results[index] = Acceptance(original, fresh=False)
                        self._remember(keys[index], original)
                        continue
                    # Its seq was taken by another writer: reload the receiver, once.
                    if index in reloaded:
                        raise RuntimeError(f"ledger refused {keys[index]!r} again after a reload")
                    reloaded.add(index)
                    log.info("sequence position reloaded", receiver=commands[index].receiver_id)
                    self.positions.pop(commands[index].receiver_id, None)
                    again.append(index)
            pending = sorted(again)
        await self._advance_counters_behind()

    def _propose(
        self, commands: Sequence[LogCommand], pending: Sequence[int]
    ) -> dict[int, tuple[ReceiverPosition, LogRecord]]:
        """The next seqs and created_at of `pending`, from the known positions."""
        now_ms = int(time.time() * 1000)
        last: dict[str, ReceiverPosition] = {}
        last_dseq: dict[tuple[str, str], int] = {}
        proposal: dict[int, tuple[ReceiverPosition, LogRecord]] = {}
        for index in pending:
            command = commands[index]
            previous = last.get(command.receiver_id) or self.positions[command.receiver_id]
            nxt = ReceiverPosition(previous.seq + 1, max(now_ms, previous.created_ms + 1))
            last[command.receiver_id] = nxt
            dseq: int | None = None
            if _is_direct_message(command):
                direction = _direction(command)
                dseq = last_dseq.get(direction, self.directions.get(direction, 0)) + 1
                last_dseq[direction] = dseq
            proposal[index] = (nxt, stamp(command, nxt.seq, nxt.created_ms, dseq=dseq))
        return proposal


def _is_direct_message(command: LogCommand) -> TypeGuard[SendMessagePayload]:
    """A message to a user: it takes a dseq in its direction (events take none)."""
    return isinstance(command, SendMessagePayload) and command.receiver_kind == "user"


def _direction(command: LogCommand) -> tuple[str, str]:
    assert isinstance(command, SendMessagePayload)
    return command.receiver_id, command.sender_id


async def _settled(write: asyncio.Task[None] | None) -> None:
    """Wait for a counter write; a failure is logged (the next probe finds what it missed)."""
    if write is None:
        return
    try:
        await write
    except Exception as exc:
        log.warning("sequence counters not advanced", error=f"{type(exc).__name__}: {exc}")

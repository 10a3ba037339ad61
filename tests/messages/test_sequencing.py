"""message_service's sequencer against real FerretDB shards, with crashes injected
between its writes (a crash = the in-memory state is lost and the batch comes again)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from libs.bus.consumer import Delivery
from libs.bus.outbox import Outbox
from libs.contracts.messages import MessageAccepted, SendMessage, SendMessagePayload
from libs.errors import Forbidden
from libs.ids import new_id
from libs.readmodels.messages import HEADS as COUNTERS
from libs.storage.mongo import MongoShards
from message_service.handlers import handle_send_batch
from message_service.message_state import MessageStates
from message_service.repository import COLLECTIONS, Ledger, ReceiverPosition
from message_service.sequencing import Sequencer
from tests.support.stores import scratch_shards


class Crash(Exception):
    """Stands for the process dying at this point."""


class DiesBeforeCounters(Ledger):
    """The process dies after the ledger write: its counter writes never happen."""

    async def advance_counters(
        self,
        positions: dict[str, ReceiverPosition],
        directions: dict[tuple[str, str], int] | None = None,
    ) -> None:
        return None


class CrashBeforeLedger(Ledger):
    async def record(self, accepted: object) -> None:  # type: ignore[override]
        raise Crash


@pytest.fixture
async def shards(infra: None) -> AsyncIterator[MongoShards]:
    async with scratch_shards("seqtest", COLLECTIONS) as shards:
        yield shards


def command(
    receiver: str, sender: str = "s1", client_msg_id: str | None = None
) -> SendMessagePayload:
    return SendMessagePayload(
        message_id=new_id(),
        sender_id=sender,
        receiver_kind="user",
        receiver_id=receiver,
        content="x",
        client_msg_id=client_msg_id,
        created_at=datetime.now(UTC),
    )


async def test_a_crash_between_ledger_and_counters_reuses_seqs_and_leaves_no_gap(
    shards: MongoShards,
) -> None:
    first = [command("r1"), command("r1"), command("r2")]
    accepted = await Sequencer(Ledger(shards)).accept(first)
    assert [a.message.seq for a in accepted] == [1, 2, 1]

    batch = [command("r1"), command("r1", client_msg_id="c-1"), command("r2")]
    await Sequencer(DiesBeforeCounters(shards)).accept(batch)  # then the process dies

    # Restarted: the same batch is redelivered, followed by new commands.
    restarted = Sequencer(Ledger(shards))
    again = await restarted.accept([*batch, command("r1"), command("r2")])
    assert [(a.message.seq, a.fresh) for a in again] == [
        (3, False),
        (4, False),
        (1 + 1, False),
        (5, True),
        (3, True),
    ]
    # A retry with the same client_msg_id, after yet another restart, is the original.
    retry = command("r1", client_msg_id="c-1")
    (original,) = await Sequencer(Ledger(shards)).accept([retry])
    assert original.message.message_id == batch[1].message_id
    assert original.message.seq == 4
    assert not original.fresh
    (later,) = await Sequencer(Ledger(shards)).accept([command("r1")])
    assert later.message.seq == 6
    assert later.message.created_at > again[3].message.created_at


async def test_a_crash_before_the_ledger_write_sequences_the_message_once(
    shards: MongoShards,
) -> None:
    batch = [command("r3", client_msg_id="a"), command("r3", client_msg_id="b")]
    with pytest.raises(Crash):
        await Sequencer(CrashBeforeLedger(shards)).accept(batch)
    restarted = Sequencer(Ledger(shards))
    accepted = await restarted.accept(batch)
    assert [(a.message.seq, a.fresh) for a in accepted] == [(1, True), (2, True)]
    # A retry of "a" with a new message id whose first copy was never sequenced elsewhere
    # answers the sequenced one.
    (retry,) = await Sequencer(Ledger(shards)).accept([command("r3", client_msg_id="a")])
    assert retry.message.message_id == batch[0].message_id


async def test_duplicates_inside_one_batch_get_one_seq(shards: MongoShards) -> None:
    same = command("r4", client_msg_id="dup")
    twin = same.model_copy(update={"message_id": new_id()})
    accepted = await Sequencer(Ledger(shards)).accept([same, twin, command("r4")])
    assert [a.message.seq for a in accepted] == [1, 1, 2]
    assert accepted[1].message.message_id == same.message_id


async def test_a_retry_in_the_middle_of_a_batch_takes_no_seq(shards: MongoShards) -> None:
    first = command("r6", client_msg_id="early")
    (accepted,) = await Sequencer(Ledger(shards)).accept([first])
    assert accepted.message.seq == 1
    # A new instance (nothing in memory): new, retry of "early", new. The ordered
    # insert stops at the retry; the entry after it is sequenced again, gap-free.
    retry = command("r6", client_msg_id="early")
    batch = [command("r6"), retry, command("r6")]
    result = await Sequencer(Ledger(shards)).accept(batch)
    assert [(a.message.seq, a.fresh) for a in result] == [(2, True), (1, False), (3, True)]
    assert result[1].message.message_id == first.message_id


async def test_a_seq_taken_by_another_writer_is_reloaded_not_reused(shards: MongoShards) -> None:
    stale = Sequencer(Ledger(shards))
    assert [a.message.seq for a in await stale.accept([command("r7"), command("r7")])] == [1, 2]
    # Partitions moved: another instance wrote seq 3 while `stale` still remembers 2.
    (other,) = await Sequencer(Ledger(shards)).accept([command("r7")])
    assert other.message.seq == 3
    (late,) = await stale.accept([command("r7")])
    assert (late.message.seq, late.fresh) == (4, True)


async def test_counters_lag_between_intervals_and_the_probe_covers_the_gap(
    shards: MongoShards,
) -> None:
    async def counter(receiver_id: str) -> int | None:
        database = shards.databases[shards.shard_index(receiver_id)]
        doc = await database[COUNTERS].find_one({"_id": receiver_id})
        return None if doc is None else int(doc["seq"])

    lazy = Sequencer(Ledger(shards), counter_interval_s=3600)
    await lazy.accept([command("r8"), command("r8"), command("r8")])
    await lazy.flush_counters()
    assert await counter("r8") == 3
    # Within the interval: stored in the ledger, the counter is not written.
    assert [a.message.seq for a in await lazy.accept([command("r8"), command("r8")])] == [4, 5]
    assert await counter("r8") == 3
    # A restart (the lagging counter is all it has) continues after the ledger, gap-free.
    restarted = Sequencer(Ledger(shards))
    (next_one,) = await restarted.accept([command("r8")])
    assert next_one.message.seq == 6
    await restarted.flush_counters()
    assert await counter("r8") == 6
    # Partitions moving (forget) writes what was behind; $max never moves a counter back.
    await lazy.accept([command("r9")])
    await lazy.forget()
    assert (await counter("r9"), await counter("r8")) == (1, 6)


class _RefusesEverything:
    """The check after the first attempt: the sender was blocked (or left, or the
    projections are being rebuilt)."""

    async def check(self, commands: list[SendMessagePayload]) -> list[Forbidden]:
        return [Forbidden("the receiver blocks you", code="blocked") for _ in commands]


class _NoCache:
    """The Redis caches are not what this test is about."""

    async def add(self, *args: object) -> None:
        return None

    async def add_events(self, *args: object) -> None:
        return None

    async def rewrite_messages(self, *args: object) -> None:
        return None

    async def purge_edits(self, *args: object) -> None:
        return None


async def test_a_seq_once_taken_resolves_to_its_message_even_if_the_check_now_refuses(
    shards: MongoShards,
) -> None:
    """Issue 15 finding 1: a batch failed after its ledger write; on redelivery the
    sender is blocked. The message is still emitted at its seq, so no hole is left."""
    first = command("r-gap", sender="s-gap")
    [taken] = await Sequencer(Ledger(shards)).accept([first])  # then the process died
    restarted = Sequencer(Ledger(shards))
    outbox = Outbox()
    delivery = Delivery(SendMessage.of(first), "messages.commands.v1", 0, 0, "r-gap")
    await handle_send_batch(
        [delivery],
        outbox,
        validator=_RefusesEverything(),  # type: ignore[arg-type]
        sequencer=restarted,
        cache=_NoCache(),  # type: ignore[arg-type]
        states=MessageStates(shards),
        edit_window_s=3600,
    )
    [(_, key, event)] = outbox.events
    assert key == "r-gap"
    assert isinstance(event, MessageAccepted)
    assert (event.payload.message_id, event.payload.seq) == (first.message_id, taken.message.seq)

    # A send refused now that took no seq before stays refused, and takes none.
    later = command("r-gap", sender="s-gap")
    outbox = Outbox()
    await handle_send_batch(
        [
            Delivery(
                SendMessage.of(later, reply_to="replies"), "messages.commands.v1", 0, 1, "r-gap"
            )
        ],
        outbox,
        validator=_RefusesEverything(),  # type: ignore[arg-type]
        sequencer=restarted,
        cache=_NoCache(),  # type: ignore[arg-type]
        states=MessageStates(shards),
        edit_window_s=3600,
    )
    assert outbox.events == []
    [(_, _, reply)] = outbox.replies
    assert reply.payload.ok is False
    assert reply.payload.error["code"] == "blocked"

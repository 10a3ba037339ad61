"""Round trips through the message read model: written by its writer (as the persister
does), read by its reader (as the gateway does), with nothing cached, so every page
comes from bucket lookups. Edges sit exactly on bucket (64) and page boundaries."""

from __future__ import annotations

import random

from libs.contracts.conversations import EventView
from libs.contracts.messages import MessageAcceptedPayload, MessageView, position
from libs.readmodels.messages import (
    BUCKET_SIZE,
    Bound,
    Conversation,
    MessageReader,
    find_message,
)
from tests.readmodels.conftest import Store


def _pos(m: MessageAcceptedPayload | MessageView) -> str:
    if isinstance(m, MessageView):
        return position(m.created_at, m.id)
    return position(m.created_at, m.message_id)


def _ids(messages: list[MessageView]) -> list[str]:
    return [m.id for m in messages]


def _newest_first(sent: list[MessageAcceptedPayload]) -> list[str]:
    return [m.message_id for m in sorted(sent, key=_pos, reverse=True)]


async def _walk_back(
    reader: MessageReader,
    conversation: Conversation,
    limit: int,
    *,
    use_hints: bool = True,
    lower: Bound | None = None,
    upper: Bound | None = None,
) -> list[str]:
    """Every page backwards, as a client following next_cursor does."""
    seen: list[str] = []
    hints: dict[str, int] | None = None
    while True:
        page = await reader.history(
            conversation, lower=lower, upper=upper, limit=limit, ascending=False, hints=hints
        )
        seen += _ids(page.messages)
        if not page.has_more:
            assert len(page.messages) <= limit
            return seen
        assert len(page.messages) == limit
        edge = page.messages[-1]
        upper = Bound(_pos(edge), False)
        hints = page.hints(edge, downward=True) if use_hints else None


async def _walk_forward(reader: MessageReader, conversation: Conversation, limit: int) -> list[str]:
    """Every page forwards from the oldest (after=), returned oldest first."""
    seen: list[str] = []
    lower: Bound | None = None
    hints: dict[str, int] | None = None
    while True:
        page = await reader.history(
            conversation, lower=lower, upper=None, limit=limit, ascending=True, hints=hints
        )
        seen += list(reversed(_ids(page.messages)))
        if not page.has_more:
            return seen
        edge = page.messages[0]
        lower = Bound(_pos(edge), False)
        hints = page.hints(edge, downward=False)


async def _direct_conversation(
    store: Store, a: str, b: str, total: int
) -> list[MessageAcceptedPayload]:
    rng = random.Random(7)
    return await store.send_pairs([(a, b) if rng.random() < 0.65 else (b, a) for _ in range(total)])


async def test_direct_history_merges_both_directions_across_buckets(store: Store) -> None:
    sent = await _direct_conversation(store, "ada", "bob", 300)
    a_to_b = [m for m in sent if m.receiver_id == "bob"]
    assert len(a_to_b) > 2 * BUCKET_SIZE, "the direction spans three buckets"
    # Heads written part way: they lag, as message_service's do between writes.
    await store.write_heads()
    sent += await _direct_conversation(store, "ada", "bob", 90)
    conversation = Conversation.direct("bob", "ada")
    expected = _newest_first(sent)

    newest = await store.reader.history(
        conversation, lower=None, upper=None, limit=50, ascending=False
    )
    assert _ids(newest.messages) == expected[:50]
    assert newest.has_more

    for limit in (50, BUCKET_SIZE, 100, 1):
        assert await _walk_back(store.reader, conversation, limit) == expected
    # Without bucket hints (an older cursor): each page bisects to its bucket.
    assert await _walk_back(store.reader, conversation, 64, use_hints=False) == expected
    assert await _walk_forward(store.reader, conversation, 37) == list(reversed(expected))


async def test_one_way_and_fresh_conversations_read_from_the_store(store: Store) -> None:
    await store.send("ada", "cy", 3)
    page = await store.reader.history(
        Conversation.direct("cy", "ada"), lower=None, upper=None, limit=50, ascending=False
    )
    assert [m.content for m in page.messages] == [f"ada->cy #{n}" for n in (3, 2, 1)]
    assert not page.has_more
    empty = await store.reader.history(
        Conversation.direct("cy", "dan"), lower=None, upper=None, limit=50, ascending=False
    )
    assert empty.messages == []
    assert not empty.has_more


async def test_date_range_pages(store: Store) -> None:
    sent = await _direct_conversation(store, "ada", "bob", 260)
    await store.write_heads()
    ordered = sorted(sent, key=_pos)
    since, until = ordered[70].created_at, ordered[200].created_at
    lower = Bound(f"{int(since.timestamp() * 1000):015d}:", True)
    upper = Bound(f"{int(until.timestamp() * 1000):015d}:", False)
    expected = [m.message_id for m in reversed(ordered[70:200])]
    conversation = Conversation.direct("ada", "bob")
    for limit in (13, 64):
        assert (
            await _walk_back(store.reader, conversation, limit, lower=lower, upper=upper)
            == expected
        )


async def test_cursors_stay_put_while_messages_arrive(store: Store) -> None:
    sent = await _direct_conversation(store, "ada", "bob", 200)
    conversation = Conversation.direct("ada", "bob")
    first = await store.reader.history(
        conversation, lower=None, upper=None, limit=40, ascending=False
    )
    edge = first.messages[-1]
    hints = first.hints(edge, downward=True)
    later = await _direct_conversation(store, "ada", "bob", 150)  # new buckets meanwhile
    seen = _ids(first.messages)
    upper = Bound(_pos(edge), False)
    while True:
        page = await store.reader.history(
            conversation, lower=None, upper=upper, limit=40, ascending=False, hints=hints
        )
        seen += _ids(page.messages)
        if not page.has_more:
            break
        edge = page.messages[-1]
        upper, hints = Bound(_pos(edge), False), page.hints(edge, downward=True)
    assert seen == _newest_first(sent)
    assert not set(seen) & {m.message_id for m in later}


async def test_group_pages_at_bucket_boundaries(store: Store) -> None:
    members = [f"m{n}" for n in range(5)]
    # seqs 1..129: bucket 2 holds only 128 and 129
    sent = await store.send_pairs(
        [(members[n % 5], "grp") for n in range(2 * BUCKET_SIZE + 1)], kind="group"
    )
    conversation = Conversation.group("grp")
    expected = _newest_first(sent)
    for limit in (1, 2, BUCKET_SIZE - 1, BUCKET_SIZE, BUCKET_SIZE + 1):
        assert await _walk_back(store.reader, conversation, limit) == expected
    # A page ending exactly at a bucket's first seq (64).
    page = await store.reader.history(
        conversation,
        lower=None,
        upper=Bound(_pos(sent[BUCKET_SIZE]), False),  # seq 65, exclusive
        limit=BUCKET_SIZE,
        ascending=False,
    )
    assert [m.seq for m in page.messages] == list(range(BUCKET_SIZE, 0, -1))
    assert not page.has_more


async def test_sync_runs_across_buckets_and_stops_at_a_missing_seq(store: Store) -> None:
    sent = await store.send("ada", "bob", 2 * BUCKET_SIZE + 10)
    for after, limit in ((0, 100), (BUCKET_SIZE - 1, BUCKET_SIZE), (BUCKET_SIZE, 500), (137, 5)):
        run, advanced, more = await store.reader.sync(["bob"], {"bob": after}, limit)
        want = [m.message_id for m in sent if m.seq > after][:limit]
        assert _ids(run) == want
        assert advanced["bob"] == (run[-1].seq if run else after)
        assert more == (len([m for m in sent if m.seq > after]) > limit)
    # Seq 139 accepted but not stored yet: the run stops before it, nothing is skipped.
    store.positions["bob"] = (store.positions["bob"][0] + 1, 0)
    await store.send("ada", "bob", 3)  # 140..142
    run, advanced, more = await store.reader.sync(["bob"], {"bob": 130}, 100)
    assert [m.seq for m in run] == list(range(131, 139))
    assert advanced["bob"] == 138
    assert not more


async def test_ledger_positions_directions_and_originals(store: Store) -> None:
    sent = await store.send("ada", "bob", 70)
    await store.write_heads()
    sent += await store.send("ada", "bob", 5)  # after the last head write: a "crash"
    positions = await store.ledger.load_positions(["bob", "nobody"])
    assert positions["bob"].seq == 75
    assert positions["nobody"].seq == 0
    directions = await store.ledger.load_directions([("bob", "ada"), ("bob", "cy")])
    assert directions == {("bob", "ada"): 70, ("bob", "cy"): 0}
    wanted = sent[3]
    from message_service.repository import dedupe_key

    key = dedupe_key("bob", "ada", None, wanted.message_id)
    originals = await store.ledger.originals([("bob", key, wanted.message_id)])
    assert originals[key] == wanted
    assert originals[wanted.message_id] == wanted
    found = await find_message(store.shards, wanted.message_id)
    assert found is not None
    assert found["seq"] == wanted.seq
    assert found["dseq"] == wanted.dseq


async def test_sync_merges_messages_and_events_by_seq_across_buckets(store: Store) -> None:
    """Issue 16's events take seqs in the receiver's log: sync from the store reads
    both collections' `rb` buckets and returns one gap-free run by seq."""
    sent = await store.send("ada", "bob", BUCKET_SIZE - 2)  # seqs 1..62
    edits = [await store.edit(sent[0], "first fix"), await store.edit(sent[1], "second")]
    later = await store.send("ada", "bob", 10)  # 65..74
    run, advanced, more = await store.reader.sync(["bob"], {"bob": 60}, 100)
    assert [e.seq for e in run] == list(range(61, 75))
    assert [e.id for e in run[2:4]] == [edits[0].event_id, edits[1].event_id]
    assert isinstance(run[2], EventView)
    assert run[2].content == "first fix"
    assert [e.id for e in run[4:]] == [m.message_id for m in later]
    assert advanced["bob"] == 74
    assert not more
    # Events of a hidden actor are left out, and the cursor still moves past them.
    run, advanced, _ = await store.reader.sync(["bob"], {"bob": 62}, 3, hidden_actors={"ada"})
    assert [e.seq for e in run] == [65]
    assert advanced["bob"] == 65
    # The edits were applied to the stored messages (history shows the current state).
    page = await store.reader.history(
        Conversation.direct("bob", "ada"), lower=None, upper=None, limit=100, ascending=False
    )
    contents = {m.id: m.content for m in page.messages}
    assert contents[sent[0].message_id] == "first fix"
    assert contents[sent[1].message_id] == "second"


async def test_group_history_reads_past_a_bucket_whose_last_slot_is_an_event(
    store: Store,
) -> None:
    """A group's history reads `messages` buckets only; when an event holds a bucket's
    last seq (63), newest and after= pages still go on to the next bucket."""
    first = await store.send_pairs([("m1", "grp")] * (BUCKET_SIZE - 2), kind="group")  # 1..62
    await store.edit(first[0], "edited")  # seq 63: bucket 0's last slot
    await store.write_heads()  # the head is in bucket 0: reading on relies on that slot
    second = await store.send_pairs([("m2", "grp")] * 5, kind="group")  # 64..68
    conversation = Conversation.group("grp")
    expected = [m.message_id for m in first + second]
    newest = await store.reader.history(
        conversation, lower=None, upper=None, limit=10, ascending=False
    )
    assert _ids(newest.messages) == list(reversed(expected))[:10]
    assert await _walk_forward(store.reader, conversation, 10) == expected
    assert await _walk_back(store.reader, conversation, 10) == list(reversed(expected))

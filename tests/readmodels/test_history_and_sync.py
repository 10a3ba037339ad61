"""Round trips through the message read model: written by its writer (as the persister
does), read by its reader (as the gateway does), with nothing cached, so every page
comes from bucket lookups. Edges sit exactly on bucket (64) and page boundaries."""

from __future__ import annotations

import random

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

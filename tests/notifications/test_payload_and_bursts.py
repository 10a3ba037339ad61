"""Pure logic of the notifier: what a notification says, and how bursts form."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from libs.contracts.messages import AttachmentRef, MessageAcceptedPayload
from notifier.coalescing import Burst, Coalescer
from notifier.handlers import PayloadPolicy, notification_payload
from notifier.sending import sign

T0 = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)


def message(
    seq: int, *, group: bool = False, content: str = "meet at noon"
) -> MessageAcceptedPayload:
    return MessageAcceptedPayload(
        message_id=f"m{seq}",
        receiver_kind="group" if group else "user",
        receiver_id="g1" if group else "bob",
        seq=seq,
        sender_id="ada",
        content=content,
        created_at=T0 + timedelta(seconds=seq),
        attachments=(AttachmentRef(id="a1", size=3, content_type="image/png"),),
    )


def test_without_previews_nothing_of_the_content_is_sent() -> None:
    burst = Burst("bob", "d:ada:bob", [message(1), message(2)])
    payload = notification_payload(burst, PayloadPolicy(previews=False, preview_chars=100))
    assert payload == {
        "type": "messages",
        "user_id": "bob",
        "conversation": {"kind": "user", "id": "ada"},
        "count": 2,
        "latest_message_id": "m2",
        "latest_at": "2026-12-02T04:00:02Z",
    }


def test_previews_carry_the_start_of_the_latest_message() -> None:
    burst = Burst("cy", "g:g1", [message(2, group=True, content="x" * 300), message(1, group=True)])
    payload = notification_payload(burst, PayloadPolicy(previews=True, preview_chars=100))
    assert payload["conversation"] == {"kind": "group", "id": "g1"}
    assert payload["preview"] == "x" * 100
    assert payload["sender_id"] == "ada"
    assert payload["attachments"] == 1


async def test_a_burst_is_flushed_once_and_the_next_message_opens_another() -> None:
    flushed: list[Burst] = []
    two = asyncio.Event()

    async def flush(burst: Burst) -> None:
        flushed.append(burst)
        if len(flushed) == 2:
            two.set()

    coalescer = Coalescer(0.05, flush)
    for seq in (1, 2, 2, 3):  # a redelivered message counts once
        coalescer.add("bob", "d:ada:bob", message(seq))
    coalescer.add("cy", "g:g1", message(4, group=True))
    await asyncio.wait_for(two.wait(), 10)
    assert sorted((b.user_id, len(b.messages)) for b in flushed) == [("bob", 3), ("cy", 1)]
    coalescer.add("bob", "d:ada:bob", message(5))
    await coalescer.close()  # a stopping notifier flushes what is open at once
    assert len(flushed) == 3
    assert [m.message_id for m in flushed[-1].messages] == ["m5"]


def test_webhook_signature_covers_timestamp_and_body() -> None:
    signature = sign("s3cret-s3cret-s3cret", 1_700_000_000, b'{"a":1}')
    assert signature.startswith("sha256=")
    assert signature != sign("s3cret-s3cret-s3cret", 1_700_000_001, b'{"a":1}')
    assert signature != sign("s3cret-s3cret-s3cret", 1_700_000_000, b'{"a":2}')

"""Sending, validation, idempotent retries, history and read-your-writes (issue 5)."""

from __future__ import annotations

import asyncio
import uuid

from tests.messages.conftest import all_history, create_group, history, send, send_ok
from tests.support.client import Api


async def test_direct_send_answers_the_accepted_message(api: Api) -> None:
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    reply = await send(
        api, ada, to_user=bob.id, content="  hi bob  ", sent_at="2026-01-02T03:04:05Z"
    )
    assert reply.status == 201, reply
    body = reply.body
    assert body["receiver"] == {"kind": "user", "id": bob.id}
    assert body["sender_id"] == ada.id
    assert body["content"] == "hi bob"
    assert body["seq"] == 1
    assert body["status"] == "sent"
    assert uuid.UUID(body["id"]).version == 7
    assert body["client_sent_at"].startswith("2026-01-02T03:04:05")
    second = await send(api, bob, to_user=ada.id, content="hi ada")
    assert second.status == 201
    assert second.body["seq"] == 1


async def test_validation_rules_have_their_status_codes(api: Api) -> None:
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    cases = [
        ({"content": "x"}, 422),  # no receiver
        ({"content": "x", "to_user_id": bob.id, "to_group_id": bob.id}, 422),  # both
        ({"content": "   ", "to_user_id": bob.id}, 422),  # empty after trimming
        ({"content": "x" * 4001, "to_user_id": bob.id}, 422),  # too long
        ({"content": 5, "to_user_id": bob.id}, 422),  # not a string
        ({"content": "x", "to_user_id": bob.id, "client_msg_id": "nope"}, 422),
        ({"content": "x", "to_user_id": bob.id, "sent_at": "yesterday"}, 422),
        ({"content": "x", "to_user_id": bob.id, "colour": "red"}, 422),  # unknown field
        ({"content": "x", "to_user_id": bob.id, "sender_id": bob.id}, 403),  # not the caller
        ({"content": "x", "to_user_id": str(uuid.uuid4())}, 404),  # unknown user
        ({"content": "x", "to_group_id": str(uuid.uuid4())}, 404),  # unknown group
    ]
    for body, status in cases:
        reply = await api.call("POST", "/v1/messages", json=body, token=ada.token)
        assert reply.status == status, (body, reply)
        assert set(reply.body["error"]) == {"code", "message", "details"}
    exactly = await send(api, ada, to_user=bob.id, content="y" * 4000)
    assert exactly.status == 201
    own_id = await send(api, ada, to_user=bob.id, content="z", sender_id=ada.id)
    assert own_id.status == 201
    anonymous = await api.call("POST", "/v1/messages", json={"content": "x", "to_user_id": bob.id})
    assert anonymous.status == 401
    not_json = await api.call(
        "POST",
        "/v1/messages",
        data=b"{",
        token=ada.token,
        headers={"Content-Type": "application/json"},
    )
    assert not_json.status == 422


async def test_blocked_sender_deleted_receiver_and_non_member(api: Api) -> None:
    ada, bob, cat = await api.new_user("ada"), await api.new_user("bob"), await api.new_user("cat")
    blocked = await api.call("PUT", f"/v1/blocks/{ada.id}", token=bob.token)
    assert blocked.status == 204, blocked
    refused = await send(api, ada, to_user=bob.id)
    assert refused.status == 403
    assert refused.error_code() == "blocked"
    assert (await send(api, bob, to_user=ada.id)).status == 201  # one-way
    unblocked = await api.call("DELETE", f"/v1/blocks/{ada.id}", token=bob.token)
    assert unblocked.status == 204
    assert (await send(api, ada, to_user=bob.id)).status == 201

    group_id = await create_group(api, ada, [bob])
    outsider = await send(api, cat, to_group=group_id)
    assert outsider.status == 403
    assert outsider.error_code() == "not_a_member"
    assert (await history(api, cat, group=group_id)).status == 404

    deleted = await api.call(
        "DELETE", "/v1/users/me", token=cat.token, json={"current_password": cat.password}
    )
    assert deleted.status == 204, deleted
    gone = await send(api, ada, to_user=cat.id)
    assert gone.status == 404


async def test_retry_with_client_msg_id_returns_the_original(api: Api) -> None:
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    client_msg_id = str(uuid.uuid4())
    first = await send(api, ada, to_user=bob.id, content="once", client_msg_id=client_msg_id)
    again = await send(api, ada, to_user=bob.id, content="once", client_msg_id=client_msg_id)
    assert first.status == again.status == 201
    assert again.body["id"] == first.body["id"]
    assert again.body["seq"] == first.body["seq"]
    assert again.body["created_at"] == first.body["created_at"]
    # Concurrent retries of one new message: still one copy.
    other = str(uuid.uuid4())
    replies = await asyncio.gather(
        *(send(api, ada, to_user=bob.id, content="race", client_msg_id=other) for _ in range(5))
    )
    assert {r.status for r in replies} == {201}
    assert len({(r.body["id"], r.body["seq"]) for r in replies}) == 1
    after = await send(api, ada, to_user=bob.id, content="next")
    assert after.body["seq"] == replies[0].body["seq"] + 1  # no seq burnt by the retries
    messages = await all_history(api, bob, with_user=ada.id)
    assert [m["content"] for m in messages] == ["next", "race", "once"]


async def test_direct_history_merges_both_directions_and_is_read_your_writes(api: Api) -> None:
    ada, bob, eve = await api.new_user("ada"), await api.new_user("bob"), await api.new_user("eve")
    sent = []
    for i in range(6):
        sender, receiver = (ada, bob) if i % 2 == 0 else (bob, ada)
        sent.append(await send_ok(api, sender, to_user=receiver.id, content=f"m{i}"))
        # Visible to both at once, before the persister has necessarily flushed.
        for viewer, other in ((ada, bob), (bob, ada)):
            page = await history(api, viewer, with_user=other.id, limit=1)
            assert page.status == 200
            assert page.body["messages"][0]["id"] == sent[-1]["id"]
    await send_ok(api, eve, to_user=ada.id, content="not in this conversation")
    for viewer, other in ((ada, bob), (bob, ada)):
        messages = await all_history(api, viewer, page_size=4, with_user=other.id)
        assert [m["content"] for m in messages] == ["m5", "m4", "m3", "m2", "m1", "m0"]
        for m in messages:
            assert m["status"] == ("sent" if m["sender_id"] == viewer.id else None)
    unknown = await history(api, ada, with_user=str(uuid.uuid4()))
    assert unknown.status == 404
    both = await history(api, ada, with_user=bob.id, group=str(uuid.uuid4()))
    assert both.status == 422
    bad_cursor = await history(api, ada, with_user=bob.id, before="garbage!")
    assert bad_cursor.status == 422
    foreign = await history(api, ada, with_user=eve.id, limit=1)
    wrong = await history(api, ada, with_user=bob.id, before=foreign.body["next_cursor"])
    assert wrong.status == 422
    for limit in (0, 101, "x"):
        assert (await history(api, ada, with_user=bob.id, limit=limit)).status == 422


async def test_group_send_history_and_seq(api: Api) -> None:
    ada, bob, cat = await api.new_user("ada"), await api.new_user("bob"), await api.new_user("cat")
    group_id = await create_group(api, ada, [bob, cat])
    seqs = []
    for i, sender in enumerate((ada, bob, cat, ada)):
        body = await send_ok(api, sender, to_group=group_id, content=f"g{i}")
        assert body["receiver"] == {"kind": "group", "id": group_id}
        seqs.append(body["seq"])
    assert seqs == [1, 2, 3, 4]
    for viewer in (ada, bob, cat):
        messages = await all_history(api, viewer, page_size=3, group=group_id)
        assert [m["content"] for m in messages] == ["g3", "g2", "g1", "g0"]
    newer = await history(api, bob, group=group_id, limit=2)
    assert [m["content"] for m in newer.body["messages"]] == ["g3", "g2"]
    older = await history(api, bob, group=group_id, limit=2, before=newer.body["next_cursor"])
    assert [m["content"] for m in older.body["messages"]] == ["g1", "g0"]
    assert older.body["has_more"] is False
    forward = await history(api, bob, group=group_id, limit=2, after=older.body["next_cursor"])
    assert [m["content"] for m in forward.body["messages"]] == ["g2", "g1"]
    # prev_cursor turns back from the page's other edge, repeating nothing of it.
    back = await history(api, bob, group=group_id, limit=2, after=older.body["prev_cursor"])
    assert [m["content"] for m in back.body["messages"]] == ["g3", "g2"]
    back = await history(api, bob, group=group_id, limit=2, before=forward.body["prev_cursor"])
    assert [m["content"] for m in back.body["messages"]] == ["g0"]

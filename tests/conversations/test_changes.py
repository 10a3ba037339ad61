"""Edits, deletes and reactions against the real stack: who may (404 for a message
the caller may not see: a stranger, a former group member; 403 for an action not
allowed; a blocked user), the frames each participant's devices get (never the
blocker's), history in the current state, sync of each event after being offline,
and an edit racing a delete."""

from __future__ import annotations

import asyncio

import aiohttp
from pymongo import AsyncMongoClient

from libs.settings import ServiceSettings
from libs.storage.routing import ShardRouter
from tests.conversations.conftest import (
    block,
    delete,
    edit,
    eventually,
    history,
    make_group,
    react,
    send,
    sync_all,
)
from tests.realtime.wsclient import connect
from tests.support.client import Api
from tests.support.system import RunningSystem


async def test_edit_reaches_both_sides_and_history_shows_it(
    api: Api, http: aiohttp.ClientSession, gateway_url: str
) -> None:
    ada, bob, eve = [await api.new_user(p) for p in ("ada", "bob", "eve")]
    sent = await send(api, ada, to_user_id=bob.id, content="helo")
    bob_socket = await connect(http, gateway_url, bob.token)
    ada_other = await connect(http, gateway_url, ada.token)

    edited = await edit(api, ada, sent["id"], "  hello  ")
    assert edited.status == 200, edited
    assert edited.body["content"] == "hello"
    assert edited.body["edited_at"] is not None
    assert edited.body["id"] == sent["id"]
    assert edited.body["seq"] == sent["seq"]
    for socket, peer in ((bob_socket, ada.id), (ada_other, bob.id)):
        frame = await socket.wait_for(lambda f: f.get("type") == "message_edited")
        assert frame["event"]["message_id"] == sent["id"]
        assert frame["event"]["content"] == "hello"
        assert frame["event"]["actor_id"] == ada.id
        assert frame["event"]["conversation"] == {"kind": "user", "id": peer}
    for viewer, other in ((ada, bob), (bob, ada)):
        [shown] = await history(api, viewer, with_user=other.id)
        assert shown["content"] == "hello"
        assert shown["edited_at"] is not None

    # Only the sender edits; a stranger does not see the message at all.
    assert (await edit(api, bob, sent["id"], "mine now")).status == 403
    stranger = await edit(api, eve, sent["id"], "hi")
    assert stranger.status == 404
    assert stranger.body["error"]["code"] == "message_not_found"
    assert (await delete(api, eve, sent["id"])).status == 404
    assert (await react(api, eve, sent["id"], "👍")).status == 404
    assert (await react(api, eve, sent["id"], "👍", add=False)).status == 404
    assert (await edit(api, ada, "0193-not-a-message", "x")).status == 404
    assert (await delete(api, ada, "x" * 65)).status == 404
    # Bad input: the error shape, never a 500.
    for body in ({"content": "   "}, {"content": "x" * 4001}, {"text": "x"}, {}):
        bad = await api.call("PATCH", f"/v1/messages/{sent['id']}", token=ada.token, json=body)
        assert bad.status == 422, bad
        assert set(bad.body["error"]) == {"code", "message", "details"}
    for socket in (bob_socket, ada_other):
        await socket.close()


async def test_delete_leaves_a_tombstone_and_purges_storage(
    api: Api, system: RunningSystem
) -> None:
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    sent = await send(api, ada, to_user_id=bob.id, content="secret words")
    assert (await edit(api, ada, sent["id"], "more secret words")).status == 200
    assert (await react(api, bob, sent["id"], "👍")).status == 200
    assert (await delete(api, bob, sent["id"])).status == 403  # not the sender
    gone = await delete(api, ada, sent["id"])
    assert gone.status == 204, gone
    assert (await delete(api, ada, sent["id"])).status == 204  # again: not an error

    for viewer, other in ((ada, bob), (bob, ada)):
        [shown] = await history(api, viewer, with_user=other.id)
        assert shown["deleted"] is True
        assert shown["content"] == ""
        assert shown["reactions"] == {}
        assert shown["my_reactions"] == []
    conflict = await edit(api, ada, sent["id"], "undelete")
    assert conflict.status == 409
    assert conflict.body["error"]["code"] == "message_deleted"
    assert (await react(api, bob, sent["id"], "👍")).status == 409

    # Storage: the message document and the edit events hold no content any more.
    settings = ServiceSettings()
    shards = settings.mongo_shards
    database = f"{settings.mongo_database}_{system.namespace}"
    router = ShardRouter(list(range(len(shards))))
    client = AsyncMongoClient(shards[router.shard_for(bob.id)], tz_aware=True)
    try:
        db = client[database]
        doc = await eventually(
            lambda: db["messages"].find_one({"_id": sent["id"]}),
            lambda d: d is not None and d.get("deleted") is True,
        )
        assert doc["content"] == ""
        assert doc["reactors"] == {}
        edits = await eventually(
            lambda: (
                db["conversation_events"]
                .find({"receiver_id": bob.id, "event.body.message_id": sent["id"]})
                .to_list(None)
            ),
            lambda docs: any(d["event"]["body"]["type"] == "message_deleted" for d in docs),
        )
        for event in edits:
            assert "secret" not in str(event)
        ledger = await db["accepted"].find_one({"message_id": sent["id"]})
        assert ledger["content"] == ""
        assert ledger["deleted"] is True
    finally:
        await client.close()
    # Nor does sync (cache or storage).
    page, _ = await sync_all(api, bob)
    assert "secret" not in str(page)


async def test_group_delete_by_admin_and_authorization(api: Api) -> None:
    owner, admin, ada, bob, eve = [
        await api.new_user(p) for p in ("own", "adm", "ada", "bob", "eve")
    ]
    group_id = await make_group(api, owner, admin, ada, bob)
    promoted = await api.call(
        "PUT",
        f"/v1/groups/{group_id}/members/{admin.id}/role",
        token=owner.token,
        json={"role": "admin"},
    )
    assert promoted.status == 200, promoted
    first = await send(api, ada, to_group_id=group_id, content="one")
    second = await send(api, ada, to_group_id=group_id, content="two")
    assert (await delete(api, bob, first["id"])).status == 403  # a plain member
    assert (await edit(api, bob, first["id"], "x")).status == 403
    assert (await delete(api, admin, first["id"])).status == 204
    assert (await delete(api, owner, second["id"])).status == 204
    stranger = await react(api, eve, first["id"], "🎉")
    assert stranger.status == 404
    # A former member may no longer see it: 404 on every route.
    third = await send(api, bob, to_group_id=group_id, content="three")
    left = await api.call("DELETE", f"/v1/groups/{group_id}/members/{bob.id}", token=bob.token)
    assert left.status == 204, left
    assert (await edit(api, bob, third["id"], "x")).status == 404
    assert (await delete(api, bob, third["id"])).status == 404
    assert (await react(api, bob, third["id"], "🎉")).status == 404
    assert (await react(api, bob, third["id"], "🎉", add=False)).status == 404
    shown = {m["id"]: m for m in await history(api, ada, group=group_id)}
    assert shown[first["id"]]["deleted"]
    assert shown[second["id"]]["deleted"]
    assert shown[third["id"]]["content"] == "three"


async def test_reactions_counts_idempotence_and_validation(
    api: Api, http: aiohttp.ClientSession, gateway_url: str
) -> None:
    ada, bob, cat = [await api.new_user(p) for p in ("ada", "bob", "cat")]
    group_id = await make_group(api, ada, bob, cat)
    sent = await send(api, ada, to_group_id=group_id, content="vote")
    ada_socket = await connect(http, gateway_url, ada.token)

    first = await react(api, bob, sent["id"], "👍")
    assert first.status == 200, first
    assert first.body["reactions"] == {"👍": 1}
    assert first.body["my_reactions"] == ["👍"]
    again = await react(api, bob, sent["id"], "👍")
    assert again.status == 200
    assert again.body["reactions"] == {"👍": 1}
    frame = await ada_socket.wait_for(lambda f: f.get("type") == "reaction")
    assert frame["event"]["emoji"] == "👍"
    assert frame["event"]["count"] == 1
    assert frame["event"]["added"] is True
    assert frame["event"]["actor_id"] == bob.id
    for emoji in ("👍", "👨‍👩‍👧", "❤️"):
        assert (await react(api, cat, sent["id"], emoji)).status == 200
    [shown] = await history(api, ada, group=group_id)
    assert shown["reactions"] == {"❤️": 1, "👍": 2, "👨‍👩‍👧": 1}
    assert shown["my_reactions"] == []
    [shown] = await history(api, cat, group=group_id)
    assert sorted(shown["my_reactions"]) == sorted(["👍", "👨‍👩‍👧", "❤️"])

    removed = await react(api, bob, sent["id"], "👍", add=False)
    assert removed.status == 200
    assert removed.body["reactions"]["👍"] == 1
    missing = await react(api, bob, sent["id"], "🎉", add=False)
    assert missing.status == 200
    for bad in ("a", "👍👍", ":)", "x" * 40):
        reply = await react(api, bob, sent["id"], bad)
        assert reply.status == 422, (bad, reply)
        assert reply.body["error"]["code"] == "invalid_emoji"
    await ada_socket.close()


async def test_blocked_users_reactions_and_edits_never_reach_the_blocker(
    api: Api, http: aiohttp.ClientSession, gateway_url: str
) -> None:
    ada, bob, cat = [await api.new_user(p) for p in ("ada", "bob", "cat")]
    group_id = await make_group(api, ada, bob, cat)
    direct = await send(api, ada, to_user_id=bob.id, content="before the block")
    in_group = await send(api, ada, to_group_id=group_id, content="hello all")
    _, bob_cursor = await sync_all(api, bob)
    await block(api, bob, ada)
    bob_socket = await connect(http, gateway_url, bob.token)
    cat_socket = await connect(http, gateway_url, cat.token)

    # Direct: the blocked user may not edit or react to the blocker (as a send).
    assert (await edit(api, ada, direct["id"], "after")).status == 403
    assert (await react(api, ada, direct["id"], "👍")).status == 403
    # Group: allowed, but the blocker gets no frame and no sync event.
    assert (await edit(api, ada, in_group["id"], "hello again")).status == 200
    assert (await react(api, ada, in_group["id"], "🎉")).status == 200
    await cat_socket.wait_for(lambda f: f.get("type") == "message_edited")
    await cat_socket.wait_for(lambda f: f.get("type") == "reaction")
    marker = await send(api, cat, to_group_id=group_id, content="after the changes")
    await bob_socket.wait_messages({marker["id"]})
    assert not [f for f in bob_socket.frames if f.get("type") in ("message_edited", "reaction")]
    page, _ = await sync_all(api, bob, bob_cursor)
    assert [m["id"] for m in page["messages"]] == [marker["id"]]
    assert page["events"] == []
    for socket in (bob_socket, cat_socket):
        await socket.close()


async def test_each_event_type_syncs_in_order_after_being_offline(
    api: Api, http: aiohttp.ClientSession, gateway_url: str
) -> None:
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    first = await send(api, ada, to_user_id=bob.id, content="first")
    _, cursor = await sync_all(api, bob)
    # Bob is offline now.
    second = await send(api, ada, to_user_id=bob.id, content="second")
    assert (await edit(api, ada, first["id"], "first, edited")).status == 200
    assert (await react(api, ada, second["id"], "🔥")).status == 200
    assert (await delete(api, ada, second["id"])).status == 204
    read = await api.call(
        "POST",
        f"/v1/conversations/users/{ada.id}/read",
        token=bob.token,
        json={"seq": second["seq"]},
    )
    assert read.status == 200

    async def probe() -> dict:
        return (await sync_all(api, bob, cursor))[0]

    page = await eventually(probe, lambda p: len(p["events"]) >= 4)
    types = [e["type"] for e in page["events"]]
    assert types == ["message_edited", "reaction", "message_deleted", "conversation_updated"]
    entries = sorted(page["messages"] + page["events"], key=lambda e: e["seq"])
    assert [e["seq"] for e in entries] == list(range(first["seq"] + 1, first["seq"] + 6))
    # The message itself is shown in its current state: a tombstone.
    assert page["messages"][0]["id"] == second["id"]
    assert page["messages"][0]["deleted"] is True
    assert page["events"][0]["content"] == "first, edited"

    # The WebSocket resume delivers the same log, gap-free, then live frames.
    socket = await connect(http, gateway_url, bob.token)
    before_resume = len(socket.frames)
    await socket.send({"type": "resume", "ref": "r", "seqs": {bob.id: first["seq"]}})
    resumed = await socket.wait_for(lambda f: f.get("type") == "resumed")
    assert resumed["seqs"][bob.id] == first["seq"] + 5
    log = [f for f in socket.frames if f.get("type") not in ("hello", "presence", "resumed")]
    # A live push that came before the resume is not replayed again: each entry once.
    assert sorted(f["type"] for f in log) == sorted(
        ["message", "message_edited", "reaction", "message_deleted", "conversation_updated"]
    )
    seqs = [(f.get("message") or f.get("event"))["seq"] for f in log]
    assert sorted(seqs) == list(range(first["seq"] + 1, first["seq"] + 6))
    # What the resume replayed came in seq order, before its `resumed`.
    after = socket.frames[before_resume:]
    end = next(i for i, f in enumerate(after) if f.get("type") == "resumed")
    replayed = [(f.get("message") or f.get("event"))["seq"] for f in after[:end] if f in log]
    assert replayed
    assert replayed == sorted(replayed)
    await socket.close()

    # Ada's own other device gets the changes through her inbox's log too.
    ada_page, _ = await sync_all(api, ada)
    assert {e["type"] for e in ada_page["events"]} >= {"message_edited", "message_deleted"}


async def test_an_edit_racing_a_delete_ends_deleted_everywhere(api: Api) -> None:
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    for round_ in range(4):
        sent = await send(api, ada, to_user_id=bob.id, content=f"race {round_}")
        edited, deleted = await asyncio.gather(
            edit(api, ada, sent["id"], f"edited {round_}"), delete(api, ada, sent["id"])
        )
        assert deleted.status == 204, deleted
        # Whichever came first in the receiver's partition: the edit succeeded before
        # the delete, or it came after it and was refused.
        assert edited.status in (200, 409), edited
        shown = {m["id"]: m for m in await history(api, bob, with_user=ada.id)}
        assert shown[sent["id"]]["deleted"] is True
        assert shown[sent["id"]]["content"] == ""
        after = await edit(api, ada, sent["id"], "too late")
        assert after.status == 409

    page, _ = await sync_all(api, bob)
    assert all(m["deleted"] for m in page["messages"])
    assert not [e for e in page["events"] if e["type"] == "message_edited" and e.get("content")]

"""Blocks hold on every path, and presence is for contacts only (docs/realtime.md,
"Who sees what"): receipts, group adds, group messages (push, history, sync, resume)."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.realtime.test_delivery import block, eventually, history, make_group, send
from tests.realtime.wsclient import connect
from tests.support.client import Api
from tests.support.system import RunningSystem


async def test_presence_is_visible_to_contacts_only_and_never_across_a_block(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    api = Api(http, system.gateway_url)
    ada, bob, carol, stranger = [await api.new_user(p) for p in ("pa", "pb", "pc", "px")]

    hidden = await api.call("GET", f"/v1/presence/{ada.id}", token=stranger.token)
    assert hidden.status == 404, hidden
    assert hidden.error_code() == "presence_not_visible"
    assert (await api.call("GET", f"/v1/presence/{ada.id}", token=ada.token)).status == 200

    # A direct conversation makes them contacts (both ways).
    await send(api, ada, to_user_id=bob.id, content="hi")

    async def visible() -> bool:
        reply = await api.call("GET", f"/v1/presence/{ada.id}", token=bob.token)
        return reply.status == 200

    await eventually(visible)
    assert (await api.call("GET", f"/v1/presence/{bob.id}", token=ada.token)).status == 200

    # A group in common does too.
    await make_group(api, carol, ada)
    assert (await api.call("GET", f"/v1/presence/{ada.id}", token=carol.token)).status == 200

    # A block hides it both ways.
    await block(api, bob, ada)
    for viewer, target in ((ada, bob), (bob, ada)):
        reply = await api.call("GET", f"/v1/presence/{target.id}", token=viewer.token)
        assert reply.status == 404, reply


async def test_a_blocked_user_cannot_add_the_blocker_to_groups(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    api = Api(http, system.gateway_url)
    ada, bob, carol = [await api.new_user(p) for p in ("ga", "gb", "gc")]
    await block(api, ada, bob)
    group_id = await make_group(api, bob, carol)

    added = await api.call("PUT", f"/v1/groups/{group_id}/members/{ada.id}", token=bob.token)
    assert added.status == 403, added
    assert added.error_code() == "cannot_add_user"
    created = await api.call(
        "POST", "/v1/groups", token=bob.token, json={"name": "trap", "member_ids": [ada.id]}
    )
    assert created.status == 403, created
    assert created.error_code() == "cannot_add_user"
    # Nor can the blocker add the blocked user; others still can.
    mine = await make_group(api, ada, carol)
    refused = await api.call("PUT", f"/v1/groups/{mine}/members/{bob.id}", token=ada.token)
    assert refused.status == 403, refused
    ok = await api.call("PUT", f"/v1/groups/{group_id}/members/{ada.id}", token=carol.token)
    assert ok.status == 403  # carol is a plain member: not allowed to add at all
    members = await api.call("GET", f"/v1/groups/{group_id}", token=bob.token)
    assert ada.id not in {m["user_id"] for m in members.body["members"]}


async def test_read_marks_of_a_blocked_user_never_reach_the_blocker(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    api = Api(http, system.gateway_url)
    ada, bob, carol = [await api.new_user(p) for p in ("ra", "rb", "rc")]
    to_bob = await send(api, ada, to_user_id=bob.id, content="before the block")
    to_carol = await send(api, ada, to_user_id=carol.id, content="control")
    await block(api, ada, bob)
    ada_socket = await connect(http, system.gateway_url, ada.token)
    try:
        read = await api.call(
            "POST",
            f"/v1/conversations/users/{ada.id}/read",
            json={"seq": to_bob["seq"]},
            token=bob.token,
        )
        assert read.status == 200, read  # bob's own watermark moves (his devices)
        assert read.body["read_seq"] == to_bob["seq"]
        # The control: carol's read reaches ada as a receipt...
        read = await api.call(
            "POST",
            f"/v1/conversations/users/{ada.id}/read",
            json={"seq": to_carol["seq"]},
            token=carol.token,
        )
        assert read.status == 200, read
        await ada_socket.wait_for(
            lambda f: f.get("type") == "receipt" and f["receipt"]["reader_id"] == carol.id
        )
        await asyncio.sleep(2)  # a quiet window for a receipt that must not come
        assert not [
            f
            for f in ada_socket.frames
            if f.get("type") == "receipt" and f["receipt"]["reader_id"] == bob.id
        ]
    finally:
        await ada_socket.close()
    # ...and history shows ada's message to bob as merely sent, carol's as read.
    (seen_bob,) = await history(api, ada, with_user=bob.id)
    assert seen_bob["status"] == "sent"
    (seen_carol,) = await history(api, ada, with_user=carol.id)
    assert seen_carol["status"] == "read"


async def test_the_blocker_gets_no_group_messages_of_the_blocked_user(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    api = Api(http, system.gateway_url)
    ada, bob, carol = [await api.new_user(p) for p in ("ma", "mb", "mc")]
    group_id = await make_group(api, carol, ada, bob)
    await block(api, ada, bob)
    ada_socket = await connect(http, system.gateway_url, ada.token)
    try:
        hidden = await send(api, bob, to_group_id=group_id, content="from bob")
        shown = await send(api, carol, to_group_id=group_id, content="from carol")
        await ada_socket.wait_messages({shown["id"]})
        assert hidden["id"] not in {m["id"] for m in ada_socket.messages()}
    finally:
        await ada_socket.close()

    assert [m["id"] for m in await history(api, ada, group=group_id)] == [shown["id"]]
    assert {m["id"] for m in await history(api, carol, group=group_id)} == {
        hidden["id"],
        shown["id"],
    }

    async def synced() -> list[str] | None:
        reply = await api.call("GET", "/v1/sync", token=ada.token)
        ids = [m["id"] for m in reply.body["messages"]]
        return ids if shown["id"] in ids else None

    assert await eventually(synced) == [shown["id"]]

    # A resume replays the same: carol's message, not bob's.
    resumed = await connect(http, system.gateway_url, ada.token)
    try:
        await resumed.send({"type": "resume", "ref": "r", "seqs": {}})
        await resumed.wait_for(lambda f: f.get("type") == "resumed")
        assert [m["id"] for m in resumed.messages()] == [shown["id"]]
    finally:
        await resumed.close()

"""GET /v1/conversations and PATCH mute/archive against the real stack: conversations
appear at the first message (direct) or at joining (group), most recent first,
with unread counts that follow a multi-device read, and settings that last."""

from __future__ import annotations

import aiohttp

from tests.conversations.conftest import (
    block,
    conversations,
    entry,
    eventually,
    make_group,
    send,
    sync_all,
)
from tests.realtime.wsclient import connect
from tests.support.client import Api


async def test_direct_conversation_unread_counts_through_a_multi_device_read(
    api: Api, http: aiohttp.ClientSession, gateway_url: str
) -> None:
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    assert entry(await conversations(api, bob), "user", ada.id) is None
    sent = [await send(api, ada, to_user_id=bob.id, content=f"m{i}") for i in range(3)]

    bobs = await eventually(
        lambda: conversations(api, bob),
        lambda items: (entry(items, "user", ada.id) or {}).get("unread_count") == 3,
    )
    mine = entry(bobs, "user", ada.id)
    assert mine is not None
    assert mine["title"] == ada.username
    assert mine["last_message"]["id"] == sent[-1]["id"]
    assert mine["last_message"]["content"] == "m2"
    assert (mine["muted"], mine["archived"]) == (False, False)
    # The sender sees the conversation too, with nothing unread (its own messages).
    adas = await eventually(
        lambda: conversations(api, ada), lambda items: entry(items, "user", bob.id) is not None
    )
    assert entry(adas, "user", bob.id)["unread_count"] == 0  # type: ignore[index]

    # Bob has two devices; one reads up to the second message.
    phone = await connect(http, gateway_url, bob.token)
    laptop = await connect(http, gateway_url, bob.token)
    read = await api.call(
        "POST",
        f"/v1/conversations/users/{ada.id}/read",
        token=bob.token,
        json={"seq": sent[1]["seq"]},
    )
    assert read.status == 200, read
    update = await laptop.wait_for(
        lambda f: f.get("type") == "conversation_updated" and f["event"]["unread_count"] == 1
    )
    assert update["event"]["conversation"] == {"kind": "user", "id": ada.id}
    assert update["event"]["read_seq"] == sent[1]["seq"]
    await phone.wait_for(lambda f: f.get("type") == "conversation_updated")
    assert entry(await conversations(api, bob), "user", ada.id)["unread_count"] == 1  # type: ignore[index]

    # The phone reads the rest over its socket: 0 everywhere.
    await phone.send({"type": "read", "conversation": f"user:{ada.id}", "seq": sent[2]["seq"]})
    await laptop.wait_for(
        lambda f: f.get("type") == "conversation_updated" and f["event"]["unread_count"] == 0
    )
    assert entry(await conversations(api, bob), "user", ada.id)["unread_count"] == 0  # type: ignore[index]
    # A new message counts again.
    await send(api, ada, to_user_id=bob.id, content="again")
    await eventually(
        lambda: conversations(api, bob),
        lambda items: (entry(items, "user", ada.id) or {}).get("unread_count") == 1,
    )
    for socket in (phone, laptop):
        await socket.close()


async def test_group_appears_at_join_and_counts_others_messages(api: Api) -> None:
    ada, bob, cat = [await api.new_user(p) for p in ("ada", "bob", "cat")]
    group_id = await make_group(api, ada, bob)
    for user in (ada, bob):
        items = await eventually(
            lambda u=user: conversations(api, u),
            lambda items: entry(items, "group", group_id) is not None,
        )
        group = entry(items, "group", group_id)
        assert group is not None
        assert group["last_message"] is None
        assert group["unread_count"] == 0
        assert group["title"].startswith("g-")
    assert entry(await conversations(api, cat), "group", group_id) is None

    await send(api, ada, to_group_id=group_id, content="one")
    last = await send(api, bob, to_group_id=group_id, content="two")
    bobs = await eventually(
        lambda: conversations(api, bob),
        lambda items: (
            (entry(items, "group", group_id) or {}).get("last_message", {})
            and entry(items, "group", group_id)["last_message"]["id"] == last["id"]
        ),  # type: ignore[index]
    )
    assert entry(bobs, "group", group_id)["unread_count"] == 1  # type: ignore[index]
    adas = await conversations(api, ada)
    assert entry(adas, "group", group_id)["unread_count"] == 1  # type: ignore[index]

    # A member added later gets the conversation; one removed loses it.
    added = await api.call("PUT", f"/v1/groups/{group_id}/members/{cat.id}", token=ada.token)
    assert added.status in (200, 201), added
    await eventually(
        lambda: conversations(api, cat), lambda items: entry(items, "group", group_id) is not None
    )
    removed = await api.call("DELETE", f"/v1/groups/{group_id}/members/{bob.id}", token=ada.token)
    assert removed.status == 204, removed
    await eventually(
        lambda: conversations(api, bob), lambda items: entry(items, "group", group_id) is None
    )


async def test_a_group_member_blocked_by_the_reader_is_not_counted_unread(api: Api) -> None:
    """Cat blocks Bob: Bob's group messages are neither pushed to Cat nor counted in
    Cat's unread count or shown as the group's last message; Ada's still are."""
    ada, bob, cat = [await api.new_user(p) for p in ("ada", "bob", "cat")]
    group_id = await make_group(api, ada, bob, cat)
    await block(api, cat, bob)
    first = await send(api, ada, to_group_id=group_id, content="from ada")
    await send(api, bob, to_group_id=group_id, content="from bob")
    marker = await send(api, ada, to_group_id=group_id, content="ada again")
    # Ada sees Bob's message counted (2 of the 3 are others'), as before.
    adas = await eventually(
        lambda: conversations(api, ada),
        lambda items: (
            ((entry(items, "group", group_id) or {}).get("last_message") or {}).get("id")
            == marker["id"]
        ),
    )
    assert entry(adas, "group", group_id)["unread_count"] == 1  # type: ignore[index]
    # Cat: Ada's two only; the last message is Ada's, never Bob's.
    cats = await eventually(
        lambda: conversations(api, cat),
        lambda items: (
            ((entry(items, "group", group_id) or {}).get("last_message") or {}).get("id")
            == marker["id"]
        ),
    )
    assert entry(cats, "group", group_id)["unread_count"] == 2  # type: ignore[index]
    bobs_next = await send(api, bob, to_group_id=group_id, content="bob again")
    # Bob's later message moves nothing for Cat; Ada counts it (Ada's own are not).
    await eventually(
        lambda: conversations(api, ada),
        lambda items: (
            ((entry(items, "group", group_id) or {}).get("last_message") or {}).get("id")
            == bobs_next["id"]
        ),
    )
    cat_group = entry(await conversations(api, cat), "group", group_id)
    assert cat_group is not None
    assert cat_group["last_message"]["id"] == marker["id"]
    assert cat_group["unread_count"] == 2
    assert first["id"] != marker["id"]


async def test_most_recent_first_with_stable_pages(api: Api) -> None:
    me = await api.new_user("me")
    peers = [await api.new_user("p") for _ in range(5)]
    for peer in peers:
        await send(api, peer, to_user_id=me.id, content=f"from {peer.username}")
    await eventually(lambda: conversations(api, me), lambda items: len(items) == 5)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        reply = await api.call("GET", "/v1/conversations", token=me.token, params=params)
        assert reply.status == 200, reply
        seen += [c["id"] for c in reply.body["conversations"]]
        cursor = reply.body["next_cursor"]
        if cursor is None:
            break
    assert seen == [p.id for p in reversed(peers)]
    bad = await api.call("GET", "/v1/conversations", token=me.token, params={"cursor": "!!"})
    assert bad.status == 422
    assert bad.body["error"]["code"] == "invalid_cursor"
    bad = await api.call("GET", "/v1/conversations", token=me.token, params={"limit": 0})
    assert bad.status == 422
    assert bad.body["error"]["code"] == "invalid_query"


async def test_archive_mute_last_and_a_new_message_unarchives_unless_muted(
    api: Api, http: aiohttp.ClientSession, gateway_url: str
) -> None:
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    await send(api, ada, to_user_id=bob.id, content="hi")
    await eventually(
        lambda: conversations(api, bob), lambda items: entry(items, "user", ada.id) is not None
    )
    laptop = await connect(http, gateway_url, bob.token)
    archived = await api.call(
        "PATCH", f"/v1/conversations/users/{ada.id}", token=bob.token, json={"archived": True}
    )
    assert archived.status == 200, archived
    assert (archived.body["archived"], archived.body["muted"]) == (True, False)
    assert archived.body["unread_count"] == 1
    await laptop.wait_for(
        lambda f: f.get("type") == "conversation_updated" and f["event"].get("archived") is True
    )
    assert entry(await conversations(api, bob), "user", ada.id) is None
    listed = await conversations(api, bob, archived="true")
    assert entry(listed, "user", ada.id)["archived"] is True  # type: ignore[index]

    # A new message brings it back.
    await send(api, ada, to_user_id=bob.id, content="back?")
    await eventually(
        lambda: conversations(api, bob), lambda items: entry(items, "user", ada.id) is not None
    )
    assert entry(await conversations(api, bob, archived="true"), "user", ada.id) is None

    # Muted and archived: it stays archived.
    both = await api.call(
        "PATCH",
        f"/v1/conversations/users/{ada.id}",
        token=bob.token,
        json={"archived": True, "muted": True},
    )
    assert both.status == 200, both
    last = await send(api, ada, to_user_id=bob.id, content="still muted")
    items = await eventually(
        lambda: conversations(api, bob, archived="true"),
        lambda items: (
            ((entry(items, "user", ada.id) or {}).get("last_message") or {}).get("id") == last["id"]
        ),
    )
    assert entry(items, "user", ada.id)["muted"] is True  # type: ignore[index]
    assert entry(await conversations(api, bob), "user", ada.id) is None
    # The setting is per user: Ada's side is untouched.
    assert entry(await conversations(api, ada), "user", bob.id)["muted"] is False  # type: ignore[index]
    await laptop.close()


async def test_settings_errors_and_authorization(api: Api) -> None:
    ada, bob, eve = [await api.new_user(p) for p in ("ada", "bob", "eve")]
    group_id = await make_group(api, ada, bob)
    path = f"/v1/conversations/users/{bob.id}"
    for body, code in (
        ({}, "invalid_body"),
        ({"muted": "loud"}, "invalid_body"),
        ({"pinned": True}, "invalid_body"),
    ):
        reply = await api.call("PATCH", path, token=ada.token, json=body)
        assert reply.status == 422, reply
        assert reply.body["error"]["code"] == code
    unknown = await api.call(
        "PATCH", "/v1/conversations/users/nobody", token=ada.token, json={"muted": True}
    )
    assert unknown.status == 404
    stranger = await api.call(
        "PATCH", f"/v1/conversations/groups/{group_id}", token=eve.token, json={"muted": True}
    )
    assert stranger.status == 404
    assert stranger.body["error"]["code"] == "conversation_not_found"
    # A former member can no longer change it either.
    left = await api.call("DELETE", f"/v1/groups/{group_id}/members/{bob.id}", token=ada.token)
    assert left.status == 204
    former = await api.call(
        "PATCH", f"/v1/conversations/groups/{group_id}", token=bob.token, json={"muted": True}
    )
    assert former.status == 404
    ok = await api.call(
        "PATCH", f"/v1/conversations/groups/{group_id}", token=ada.token, json={"muted": True}
    )
    assert ok.status == 200, ok
    assert ok.body["muted"] is True
    assert ok.body["kind"] == "group"
    unauthenticated = await api.call("GET", "/v1/conversations")
    assert unauthenticated.status == 401


async def test_conversation_updates_reach_an_offline_device_through_sync(api: Api) -> None:
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    _, cursor = await sync_all(api, bob)
    sent = await send(api, ada, to_user_id=bob.id, content="read me")
    await eventually(
        lambda: conversations(api, bob), lambda items: entry(items, "user", ada.id) is not None
    )
    read = await api.call(
        "POST", f"/v1/conversations/users/{ada.id}/read", token=bob.token, json={"seq": sent["seq"]}
    )
    assert read.status == 200
    muted = await api.call(
        "PATCH", f"/v1/conversations/users/{ada.id}", token=bob.token, json={"muted": True}
    )
    assert muted.status == 200

    async def probe() -> dict:
        return (await sync_all(api, bob, cursor))[0]

    got = await eventually(probe, lambda page: len(page["events"]) >= 2)
    assert [m["id"] for m in got["messages"]] == [sent["id"]]
    updates = [e for e in got["events"] if e["type"] == "conversation_updated"]
    assert updates[0]["unread_count"] == 0
    assert updates[0]["read_seq"] == sent["seq"]
    assert updates[1]["muted"] is True
    # One gap-free seq log: the message, then the two updates.
    seqs = sorted([m["seq"] for m in got["messages"]] + [e["seq"] for e in got["events"]])
    assert seqs == list(range(seqs[0], seqs[0] + 3))

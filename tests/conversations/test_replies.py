"""Replies against the real stack: `reply_to` names a message of the same
conversation (anything else is 422); views carry {id, sender_id, preview} with the
original's current content, or its tombstone once it was deleted; the pushed
frame carries the preview too."""

from __future__ import annotations

import uuid

import aiohttp

from tests.conversations.conftest import delete, edit, history, make_group, send
from tests.realtime.wsclient import connect
from tests.support.client import Api


async def test_reply_previews_follow_the_original(
    api: Api, http: aiohttp.ClientSession, gateway_url: str
) -> None:
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    original = await send(api, ada, to_user_id=bob.id, content="x" * 150)
    ada_socket = await connect(http, gateway_url, ada.token)
    reply = await send(api, bob, to_user_id=ada.id, content="yes", reply_to=original["id"])
    assert reply["reply_to"] == {
        "id": original["id"],
        "sender_id": ada.id,
        "preview": "x" * 100,
        "deleted": False,
    }
    pushed = await ada_socket.wait_for(
        lambda f: f.get("type") == "message" and f["message"]["id"] == reply["id"]
    )
    assert pushed["message"]["reply_to"]["preview"] == "x" * 100

    assert (await edit(api, ada, original["id"], "short now")).status == 200
    shown = {m["id"]: m for m in await history(api, ada, with_user=bob.id)}
    assert shown[reply["id"]]["reply_to"]["preview"] == "short now"

    assert (await delete(api, ada, original["id"])).status == 204
    for viewer, other in ((ada, bob), (bob, ada)):
        shown = {m["id"]: m for m in await history(api, viewer, with_user=other.id)}
        assert shown[reply["id"]]["reply_to"] == {
            "id": original["id"],
            "sender_id": ada.id,
            "preview": None,
            "deleted": True,
        }
    await ada_socket.close()


async def test_reply_to_must_be_in_the_same_conversation(api: Api) -> None:
    ada, bob, cat = [await api.new_user(p) for p in ("ada", "bob", "cat")]
    group_id = await make_group(api, ada, bob)
    elsewhere = await send(api, ada, to_user_id=cat.id, content="not yours")
    in_group = await send(api, ada, to_group_id=group_id, content="group one")
    for body in (
        {"to_user_id": ada.id, "reply_to": elsewhere["id"]},  # another direct chat
        {"to_user_id": ada.id, "reply_to": in_group["id"]},  # the group's message
        {"to_user_id": ada.id, "reply_to": str(uuid.uuid4())},  # no such message
        {"to_group_id": group_id, "reply_to": elsewhere["id"]},
    ):
        refused = await api.call(
            "POST", "/v1/messages", token=bob.token, json={"content": "re", **body}
        )
        assert refused.status == 422, (body, refused)
        assert refused.body["error"]["code"] == "invalid_reply_to"
    too_long = await api.call(
        "POST",
        "/v1/messages",
        token=bob.token,
        json={"content": "re", "to_user_id": ada.id, "reply_to": "x" * 65},
    )
    assert too_long.status == 422
    ok = await send(api, bob, to_group_id=group_id, content="re", reply_to=in_group["id"])
    assert ok["reply_to"]["preview"] == "group one"
    [newest, *_] = await history(api, ada, group=group_id)
    assert newest["reply_to"]["id"] == in_group["id"]

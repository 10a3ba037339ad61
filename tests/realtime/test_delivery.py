"""Real-time delivery across two gateway instances: direct and group pushes to every
socket of every recipient, receipts back to the sender, typing and presence under
blocks, and resume after a disconnect (exactly the missed messages)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from tests.realtime.wsclient import Socket, connect
from tests.support.client import Api, User
from tests.support.system import RunningSystem, ServiceProcess


def second_gateway(system: RunningSystem) -> ServiceProcess:
    """Instance B (started once per session; instance A is system.gateway_url)."""
    for gateway in system.extra_gateways:
        if gateway.instance == "-b":
            return gateway
    return system.add_gateway("b")


async def send(api: Api, sender: User, **body: Any) -> dict[str, Any]:
    reply = await api.call("POST", "/v1/messages", token=sender.token, json=body)
    assert reply.status == 201, reply
    return reply.body


async def make_group(api: Api, owner: User, *members: User) -> str:
    reply = await api.call(
        "POST",
        "/v1/groups",
        token=owner.token,
        json={"name": "crew", "member_ids": [m.id for m in members]},
    )
    assert reply.status == 201, reply
    return reply.body["id"]


async def block(api: Api, blocker: User, blocked: User) -> None:
    reply = await api.call("PUT", f"/v1/blocks/{blocked.id}", token=blocker.token)
    assert reply.status == 204, reply


async def history(api: Api, caller: User, **params: str) -> list[dict[str, Any]]:
    reply = await api.call("GET", "/v1/messages", token=caller.token, params=params)
    assert reply.status == 200, reply
    return reply.body["messages"]


async def eventually(check: Any, timeout: float = 20.0) -> Any:
    """Poll `check()` until it returns a truthy value (or fail after `timeout`)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


async def test_direct_message_reaches_every_socket_on_both_instances(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    api = Api(http, system.gateway_url)
    url_a, url_b = system.gateway_url, second_gateway(system).url
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    ada_a, ada_b = await connect(http, url_a, ada.token), await connect(http, url_b, ada.token)
    bob_b, bob_a = await connect(http, url_b, bob.token), await connect(http, url_a, bob.token)

    posted = await send(api, ada, to_user_id=bob.id, content="over http")
    for socket in (bob_a, bob_b, ada_b):  # the sender's other device sees it too
        await socket.wait_messages({posted["id"]})
    pushed = next(m for m in bob_b.messages() if m["id"] == posted["id"])
    assert pushed["content"] == "over http"
    assert pushed["seq"] == posted["seq"]
    assert pushed["receiver"] == {"kind": "user", "id": bob.id}

    await ada_a.send(
        {"type": "send", "ref": "s1", "message": {"to_user_id": bob.id, "content": "over ws"}}
    )
    sent = await ada_a.wait_for(lambda f: f.get("ref") == "s1")
    assert sent["type"] == "sent"
    assert sent["message"]["status"] == "sent"
    assert sent["message"]["seq"] == posted["seq"] + 1
    for socket in (bob_a, bob_b):
        await socket.wait_messages({sent["message"]["id"]})

    # The same rules as POST /v1/messages: a bad send gets the same error, as a frame.
    await ada_a.send(
        {"type": "send", "ref": "s2", "message": {"to_user_id": bob.id, "content": "   "}}
    )
    refused = await ada_a.wait_for(lambda f: f.get("ref") == "s2")
    assert refused["type"] == "error"
    assert refused["error"]["status"] == 422
    http_refused = await api.call(
        "POST", "/v1/messages", token=ada.token, json={"to_user_id": bob.id, "content": "   "}
    )
    assert http_refused.body["error"]["code"] == refused["error"]["code"]
    for socket in (ada_a, ada_b, bob_a, bob_b):
        await socket.close()


async def test_group_message_reaches_members_on_both_instances_but_not_blockers(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    api = Api(http, system.gateway_url)
    url_a, url_b = system.gateway_url, second_gateway(system).url
    ada, bob, carol, erin = [await api.new_user(p) for p in ("ada", "bob", "carol", "erin")]
    group_id = await make_group(api, ada, bob, carol, erin)
    await block(api, erin, ada)
    bob_a = await connect(http, url_a, bob.token)
    carol_b = await connect(http, url_b, carol.token)
    carol_a = await connect(http, url_a, carol.token)
    erin_b = await connect(http, url_b, erin.token)

    from_ada = await send(api, ada, to_group_id=group_id, content="hello crew")
    from_bob = await send(api, bob, to_group_id=group_id, content="hi all")
    for socket in (carol_a, carol_b):
        await socket.wait_messages({from_ada["id"], from_bob["id"]})
    await bob_a.wait_messages({from_ada["id"]})
    # Same group, same partition, pushed in seq order: bob's later message arrived,
    # so ada's would have been there first had it been pushed.
    await erin_b.wait_messages({from_bob["id"]})
    assert from_ada["id"] not in {m["id"] for m in erin_b.messages()}
    for socket in (bob_a, carol_a, carol_b, erin_b):
        await socket.close()


async def test_receipts_flow_back_to_the_sender(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    api = Api(http, system.gateway_url)
    url_a, url_b = system.gateway_url, second_gateway(system).url
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    ada_a = await connect(http, url_a, ada.token)
    bob_b = await connect(http, url_b, bob.token)
    sent = [await send(api, ada, to_user_id=bob.id, content=f"m{i}") for i in range(3)]
    await bob_b.wait_messages({m["id"] for m in sent})

    await bob_b.send({"type": "ack", "receiver": bob.id, "seq": sent[1]["seq"]})
    receipt = await ada_a.wait_for(
        lambda f: f.get("type") == "receipt" and f["receipt"]["kind"] == "delivered"
    )
    assert receipt["receipt"]["reader_id"] == bob.id
    assert receipt["receipt"]["up_to_seq"] == sent[1]["seq"]

    async def statuses() -> list[str] | None:
        page = await history(api, ada, with_user=bob.id)
        by_id = {m["id"]: m["status"] for m in page}
        found = [by_id.get(m["id"]) for m in sent]
        return found if found == ["delivered", "delivered", "sent"] else None

    await eventually(statuses)
    # The other side of the conversation carries no status on messages it received.
    assert all(m["status"] is None for m in await history(api, bob, with_user=ada.id))

    read = await api.call(
        "POST",
        f"/v1/conversations/users/{ada.id}/read",
        token=bob.token,
        json={"seq": sent[2]["seq"]},
    )
    assert read.status == 200, read
    assert read.body["read_seq"] == sent[2]["seq"]
    assert read.body["delivered_seq"] == sent[2]["seq"]
    receipt = await ada_a.wait_for(
        lambda f: f.get("type") == "receipt" and f["receipt"]["kind"] == "read"
    )
    assert receipt["receipt"]["up_to_seq"] == sent[2]["seq"]
    # Read-your-writes: the REST read answered after the watermark was stored.
    page = await history(api, ada, with_user=bob.id)
    assert {m["status"] for m in page if m["id"] in {s["id"] for s in sent}} == {"read"}

    # Watermarks never move back.
    back = await api.call(
        "POST", f"/v1/conversations/users/{ada.id}/read", token=bob.token, json={"seq": 1}
    )
    assert back.status == 200
    assert back.body["read_seq"] == sent[2]["seq"]
    bad = await api.call(
        "POST", f"/v1/conversations/users/{ada.id}/read", token=bob.token, json={"seq": 0}
    )
    assert bad.status == 422
    await ada_a.close()
    await bob_b.close()


async def test_group_receipts_counts_and_per_member_list(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    api = Api(http, system.gateway_url)
    url_a, url_b = system.gateway_url, second_gateway(system).url
    ada, bob, carol, dan = [await api.new_user(p) for p in ("ada", "bob", "carol", "dan")]
    outsider = await api.new_user("out")
    group_id = await make_group(api, ada, bob, carol, dan)
    ada_a = await connect(http, url_a, ada.token)
    bob_b = await connect(http, url_b, bob.token)
    carol_a = await connect(http, url_a, carol.token)
    message = await send(api, ada, to_group_id=group_id, content="status?")
    await bob_b.wait_messages({message["id"]})
    await carol_a.wait_messages({message["id"]})

    await bob_b.send({"type": "ack", "receiver": group_id, "seq": message["seq"]})
    await carol_a.send({"type": "read", "conversation": f"group:{group_id}", "seq": message["seq"]})
    await ada_a.wait_for(
        lambda f: f.get("type") == "receipt" and f["receipt"]["reader_id"] == carol.id
    )

    async def receipts() -> dict[str, Any] | None:
        reply = await api.call("GET", f"/v1/messages/{message['id']}/receipts", token=ada.token)
        assert reply.status == 200, reply
        return reply.body if reply.body["delivered_count"] == 2 else None

    body = await eventually(receipts)
    assert body["read_count"] == 1
    assert {m["user_id"]: m["status"] for m in body["members"]} == {
        bob.id: "delivered",
        carol.id: "read",
        dan.id: "sent",
    }
    page = await history(api, ada, group=group_id)
    mine = next(m for m in page if m["id"] == message["id"])
    assert (mine["delivered_count"], mine["read_count"], mine["status"]) == (2, 1, "sent")

    hidden = await api.call("GET", f"/v1/messages/{message['id']}/receipts", token=outsider.token)
    assert hidden.status == 404
    for socket in (ada_a, bob_b, carol_a):
        await socket.close()


async def test_typing_and_presence_respect_blocks(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    api = Api(http, system.gateway_url)
    url_a, url_b = system.gateway_url, second_gateway(system).url
    ada, bob, carol, erin = [await api.new_user(p) for p in ("ada", "bob", "carol", "erin")]
    group_id = await make_group(api, ada, bob, carol, erin)
    await block(api, erin, ada)  # erin neither sees ada's nor shows ada her own

    ada_a = await connect(http, url_a, ada.token)
    bob_b = await connect(http, url_b, bob.token)
    online = await ada_a.wait_for(lambda f: f.get("type") == "presence" and f["user_id"] == bob.id)
    assert online["online"] is True
    # A new socket gets a snapshot of its online peers.
    snapshot = await bob_b.wait_for(
        lambda f: f.get("type") == "presence" and f["user_id"] == ada.id
    )
    assert snapshot["online"] is True
    erin_b = await connect(http, url_b, erin.token)  # her presence goes to bob, not ada
    await bob_b.wait_for(lambda f: f.get("type") == "presence" and f["user_id"] == erin.id)
    await erin_b.wait_for(lambda f: f.get("type") == "presence" and f["user_id"] == bob.id)

    # typing: direct and group
    await ada_a.send({"type": "typing", "conversation": f"user:{bob.id}"})
    direct = await bob_b.wait_for(lambda f: f.get("type") == "typing")
    assert direct == {"type": "typing", "user_id": ada.id, "conversation": f"user:{ada.id}"}
    await ada_a.send({"type": "typing", "conversation": f"group:{group_id}"})
    await bob_b.wait_for(
        lambda f: f.get("type") == "typing" and f["conversation"] == f"group:{group_id}"
    )
    await erin_b.send({"type": "typing", "conversation": f"group:{group_id}", "ref": "e1"})
    await erin_b.send({"type": "typing", "conversation": f"user:{ada.id}", "ref": "e2"})
    await erin_b.send({"type": "nonsense", "ref": "fence"})  # frames are handled in order
    await erin_b.wait_for(lambda f: f.get("ref") == "fence")
    # carol types after erin's frames were handled; ada's instance gets pushes in order.
    carol_a = await connect(http, url_a, carol.token)
    await carol_a.send({"type": "typing", "conversation": f"group:{group_id}"})
    await ada_a.wait_for(lambda f: f.get("type") == "typing" and f["user_id"] == carol.id)
    await bob_b.wait_for(lambda f: f.get("type") == "typing" and f["user_id"] == erin.id)
    assert not [f for f in ada_a.frames if f.get("user_id") == erin.id]
    assert not [f for f in erin_b.frames if f.get("user_id") == ada.id]

    # presence: offline with last_seen; the REST view agrees; blocks hide it.
    await bob_b.close()
    offline = await ada_a.wait_for(
        lambda f: f.get("type") == "presence" and f["user_id"] == bob.id and not f["online"]
    )
    assert offline["last_seen"] > 0
    seen = await api.call("GET", f"/v1/presence/{bob.id}", token=ada.token)
    assert seen.body["online"] is False
    assert seen.body["last_seen"] > 0
    visible = await api.call("GET", f"/v1/presence/{ada.id}", token=bob.token)
    assert visible.body["online"] is True
    hidden = await api.call("GET", f"/v1/presence/{erin.id}", token=ada.token)
    assert hidden.status == 404  # blocks hide presence: not a visible contact
    for socket in (ada_a, erin_b, carol_a):
        await socket.close()


async def test_reconnect_resumes_exactly_the_missed_messages(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    api = Api(http, system.gateway_url)
    url_a, url_b = system.gateway_url, second_gateway(system).url
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    group_id = await make_group(api, ada, bob)
    bob_b = await connect(http, url_b, bob.token)
    first = await send(api, ada, to_user_id=bob.id, content="before")
    first_group = await send(api, ada, to_group_id=group_id, content="before, group")
    await bob_b.wait_messages({first["id"], first_group["id"]})
    last_seqs = {bob.id: first["seq"], group_id: first_group["seq"]}
    await bob_b.close()

    missed = [await send(api, ada, to_user_id=bob.id, content=f"missed {i}") for i in range(4)]
    missed.append(await send(api, ada, to_group_id=group_id, content="missed, group"))

    async def persisted() -> bool:  # resume reads stored messages, like sync
        reply = await api.call("GET", "/v1/sync", token=bob.token)
        return {m["id"] for m in missed} <= {m["id"] for m in reply.body["messages"]}

    await eventually(persisted)
    bob_a = await connect(http, url_a, bob.token)
    live: list[dict[str, Any]] = []

    async def keep_sending() -> None:  # messages accepted around the seam
        for i in range(5):
            live.append(await send(api, ada, to_user_id=bob.id, content=f"live {i}"))

    sender = asyncio.create_task(keep_sending())
    await bob_a.send({"type": "resume", "ref": "r", "seqs": last_seqs})
    resumed = await bob_a.wait_for(lambda f: f.get("type") == "resumed")
    assert resumed["complete"] is True
    await sender
    expected = {m["id"] for m in missed + live}
    await bob_a.wait_messages(expected)
    received = [m["id"] for m in bob_a.messages()]
    assert sorted(received) == sorted(expected)  # nothing twice, nothing from before
    assert resumed["seqs"][group_id] == missed[-1]["seq"]
    await bob_a.close()


async def test_sockets_survive_nothing_but_their_own(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    """A socket closed by its client leaves no route: pushes then go nowhere, and
    the user is offline for presence."""
    api = Api(http, system.gateway_url)
    ada = await api.new_user("ada")
    socket: Socket = await connect(http, second_gateway(system).url, ada.token)
    assert (await api.call("GET", f"/v1/presence/{ada.id}", token=ada.token)).body["online"]
    await socket.close()

    async def offline() -> bool:
        reply = await api.call("GET", f"/v1/presence/{ada.id}", token=ada.token)
        return reply.body["online"] is False

    await eventually(offline)


async def test_group_changes_are_pushed_to_members(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    api = Api(http, system.gateway_url)
    ada, bob, dan = [await api.new_user(p) for p in ("ada", "bob", "dan")]
    group_id = await make_group(api, ada, bob)
    bob_b = await connect(http, second_gateway(system).url, bob.token)
    dan_a = await connect(http, system.gateway_url, dan.token)
    added = await api.call("PUT", f"/v1/groups/{group_id}/members/{dan.id}", token=ada.token)
    assert added.status == 200, added
    for socket in (bob_b, dan_a):
        frame = await socket.wait_for(
            lambda f: f.get("type") == "group" and f["event"] == "MemberAdded"
        )
        assert frame["payload"]["group_id"] == group_id
        assert frame["payload"]["user_id"] == dan.id
    removed = await api.call("DELETE", f"/v1/groups/{group_id}/members/{bob.id}", token=ada.token)
    assert removed.status == 204, removed
    gone = await bob_b.wait_for(
        lambda f: f.get("type") == "group" and f["event"] == "MemberRemoved"
    )
    assert gone["payload"]["user_id"] == bob.id
    await bob_b.close()
    await dan_a.close()


async def test_read_of_an_unknown_conversation_is_404(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    api = Api(http, system.gateway_url)
    ada = await api.new_user("ada")
    for path in (
        "/v1/conversations/users/nosuchuser/read",
        "/v1/conversations/groups/nogroup/read",
    ):
        reply = await api.call("POST", path, token=ada.token, json={"seq": 1})
        assert reply.status == 404, reply
    selfread = await api.call(
        "POST", f"/v1/conversations/users/{ada.id}/read", token=ada.token, json={"seq": 1}
    )
    assert selfread.status == 422
    extra = await api.call(
        "POST", "/v1/conversations/users/x/read", token=ada.token, json={"seq": 1, "x": 2}
    )
    assert extra.status == 422


async def test_many_sends_in_flight_on_one_socket(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    api = Api(http, system.gateway_url)
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    ada_a = await connect(http, system.gateway_url, ada.token)
    bob_b = await connect(http, second_gateway(system).url, bob.token)
    refs = [f"r{i}" for i in range(40)]
    for ref in refs:  # no waiting between frames: answers come as they are accepted
        await ada_a.send(
            {"type": "send", "ref": ref, "message": {"to_user_id": bob.id, "content": ref}}
        )
    answers = [await ada_a.wait_for(lambda f, r=ref: f.get("ref") == r) for ref in refs]
    assert {a["type"] for a in answers} == {"sent"}
    seqs = sorted(a["message"]["seq"] for a in answers)
    assert seqs == list(range(seqs[0], seqs[0] + len(refs)))  # gap-free, each once
    await bob_b.wait_messages({a["message"]["id"] for a in answers})
    await ada_a.close()
    await bob_b.close()

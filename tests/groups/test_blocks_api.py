"""Blocks through HTTP against the running stack, and read-your-writes with messaging."""

from __future__ import annotations

from tests.groups.helpers import eventually
from tests.support.client import Api, User

UNKNOWN = "0193f1c2-0000-7000-8000-000000000000"


async def blocked_ids(api: Api, user: User) -> list[str]:
    reply = await api.call("GET", "/v1/blocks", token=user.token)
    assert reply.status == 200, reply
    return [item["user_id"] for item in reply.body["items"]]


async def test_block_unblock_round_trip(api: Api) -> None:
    alice, bob, carol = [await api.new_user("b") for _ in range(3)]
    assert await blocked_ids(api, alice) == []

    assert (await api.call("PUT", f"/v1/blocks/{bob.id}", token=alice.token)).status == 204
    assert (
        await api.call("PUT", f"/v1/blocks/{bob.id}", token=alice.token)
    ).status == 204  # idempotent
    assert (await api.call("PUT", f"/v1/blocks/{carol.id}", token=alice.token)).status == 204
    assert await blocked_ids(api, alice) == sorted([bob.id, carol.id])
    assert await blocked_ids(api, bob) == []  # one-way

    assert (await api.call("DELETE", f"/v1/blocks/{bob.id}", token=alice.token)).status == 204
    assert (
        await api.call("DELETE", f"/v1/blocks/{bob.id}", token=alice.token)
    ).status == 204  # idempotent
    assert await blocked_ids(api, alice) == [carol.id]


async def test_block_errors(api: Api) -> None:
    alice = await api.new_user("b")
    reply = await api.call("PUT", f"/v1/blocks/{alice.id}", token=alice.token)
    assert reply.status == 422
    assert reply.error_code() == "cannot_block_self"
    reply = await api.call("PUT", f"/v1/blocks/{UNKNOWN}", token=alice.token)
    assert reply.status == 404
    assert reply.error_code() == "user_not_found"
    reply = await api.call("DELETE", f"/v1/blocks/{UNKNOWN}", token=alice.token)
    assert reply.status == 404
    assert (await api.call("PUT", "/v1/blocks/<script>", token=alice.token)).status == 404
    assert (await api.call("GET", "/v1/blocks")).status == 401
    assert await blocked_ids(api, alice) == []


async def test_deleted_account_blocks_are_dropped_both_ways(api: Api) -> None:
    leaver, blocked_by_leaver, blocker_of_leaver = [await api.new_user("b") for _ in range(3)]
    assert (
        await api.call("PUT", f"/v1/blocks/{blocked_by_leaver.id}", token=leaver.token)
    ).status == 204
    assert (
        await api.call("PUT", f"/v1/blocks/{leaver.id}", token=blocker_of_leaver.token)
    ).status == 204

    assert (
        await api.call(
            "DELETE", "/v1/users/me", token=leaver.token, json={"current_password": leaver.password}
        )
    ).status == 204

    remaining = await eventually(lambda: blocked_ids(api, blocker_of_leaver), lambda ids: ids == [])
    assert remaining == []
    # Blocking a deleted account is "no such user".
    reply = await api.call("PUT", f"/v1/blocks/{leaver.id}", token=blocker_of_leaver.token)
    assert reply.status == 404


async def send(api: Api, sender: User, *, to_user: User | None = None, to_group: str | None = None):  # type: ignore[no-untyped-def]
    body: dict[str, str] = {"content": "hello"}
    if to_user is not None:
        body["to_user_id"] = to_user.id
    if to_group is not None:
        body["to_group_id"] = to_group
    return await api.call("POST", "/v1/messages", json=body, token=sender.token)


async def test_block_then_immediately_send_is_rejected(api: Api) -> None:
    """Read-your-writes: once PUT /v1/blocks answered, the blocked sender is refused."""
    alice, bob = await api.new_user("b"), await api.new_user("b")
    assert (await send(api, bob, to_user=alice)).status == 201
    for _ in range(3):
        assert (await api.call("PUT", f"/v1/blocks/{bob.id}", token=alice.token)).status == 204
        reply = await send(api, bob, to_user=alice)
        assert reply.status == 403, reply
        assert (await api.call("DELETE", f"/v1/blocks/{bob.id}", token=alice.token)).status == 204
        reply = await send(api, bob, to_user=alice)
        assert reply.status == 201, reply
    # Blocking is one-way: alice still reaches bob while she blocks him.
    assert (await api.call("PUT", f"/v1/blocks/{bob.id}", token=alice.token)).status == 204
    assert (await send(api, alice, to_user=bob)).status == 201


async def test_removed_member_cannot_send_to_the_group_at_once(api: Api) -> None:
    owner, member = await api.new_user("b"), await api.new_user("b")
    reply = await api.call(
        "POST", "/v1/groups", json={"name": "ryw", "member_ids": [member.id]}, token=owner.token
    )
    assert reply.status == 201
    gid = reply.body["id"]
    assert (await send(api, member, to_group=gid)).status == 201
    reply = await api.call("DELETE", f"/v1/groups/{gid}/members/{member.id}", token=owner.token)
    assert reply.status == 204
    assert (await send(api, member, to_group=gid)).status == 403
    assert (
        await api.call("PUT", f"/v1/groups/{gid}/members/{member.id}", token=owner.token)
    ).status == 200
    assert (await send(api, member, to_group=gid)).status == 201

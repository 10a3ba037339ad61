"""Groups through HTTP against the running stack: lifecycle, roles, hand-over, limits."""

from __future__ import annotations

from typing import Any

from tests.groups.helpers import eventually
from tests.support.client import Api, Reply, User
from tests.support.system import RunningSystem


async def create_group(api: Api, owner: User, name: str, members: list[User] = ()) -> dict:  # type: ignore[assignment]
    reply = await api.call(
        "POST",
        "/v1/groups",
        json={"name": name, "member_ids": [m.id for m in members]},
        token=owner.token,
    )
    assert reply.status == 201, reply
    return reply.body


async def get_group(api: Api, user: User, group_id: str) -> Reply:
    return await api.call("GET", f"/v1/groups/{group_id}", token=user.token)


def roles(view: dict[str, Any]) -> dict[str, str]:
    return {m["user_id"]: m["role"] for m in view["members"]}


async def test_group_lifecycle_with_role_rules(api: Api) -> None:
    owner, member, admin, extra, outsider = [await api.new_user("g") for _ in range(5)]
    group = await create_group(api, owner, "  Book   club ", [member])
    gid = group["id"]
    assert group["name"] == "Book club"
    assert group["owner_id"] == owner.id
    assert roles(group) == {owner.id: "owner", member.id: "member"}

    # Read-your-writes: the creator and the member see it at once.
    seen = await get_group(api, member, gid)
    assert seen.status == 200
    assert roles(seen.body) == roles(group)

    # A non-member is told the group does not exist, whatever they try.
    for method, path, body in [
        ("GET", f"/v1/groups/{gid}", None),
        ("PATCH", f"/v1/groups/{gid}", {"name": "mine now"}),
        ("PUT", f"/v1/groups/{gid}/members/{outsider.id}", None),
        ("DELETE", f"/v1/groups/{gid}", None),
    ]:
        reply = await api.call(method, path, json=body, token=outsider.token)
        assert reply.status == 404, (method, path, reply)
        assert reply.error_code() == "group_not_found"

    # A plain member cannot add, rename, change roles or delete.
    assert (
        await api.call("PUT", f"/v1/groups/{gid}/members/{admin.id}", token=member.token)
    ).status == 403
    assert (
        await api.call("PATCH", f"/v1/groups/{gid}", json={"name": "x"}, token=member.token)
    ).status == 403
    reply = await api.call(
        "PUT",
        f"/v1/groups/{gid}/members/{owner.id}/role",
        json={"role": "member"},
        token=member.token,
    )
    assert reply.status == 403
    assert (await api.call("DELETE", f"/v1/groups/{gid}", token=member.token)).status == 403

    # The owner adds (twice: not an error) and promotes.
    added = await api.call("PUT", f"/v1/groups/{gid}/members/{admin.id}", token=owner.token)
    assert added.status == 200, added
    assert added.body["role"] == "member"
    again = await api.call("PUT", f"/v1/groups/{gid}/members/{admin.id}", token=owner.token)
    assert again.status == 200
    assert again.body["joined_at"] == added.body["joined_at"]
    promoted = await api.call(
        "PUT",
        f"/v1/groups/{gid}/members/{admin.id}/role",
        json={"role": "admin"},
        token=owner.token,
    )
    assert promoted.status == 200
    assert promoted.body["role"] == "admin"

    # An admin adds, renames and removes plain members...
    assert (
        await api.call("PUT", f"/v1/groups/{gid}/members/{extra.id}", token=admin.token)
    ).status == 200
    renamed = await api.call(
        "PATCH", f"/v1/groups/{gid}", json={"name": "Readers"}, token=admin.token
    )
    assert renamed.status == 200
    assert renamed.body["name"] == "Readers"
    assert (
        await api.call("DELETE", f"/v1/groups/{gid}/members/{extra.id}", token=admin.token)
    ).status == 204
    # ...but cannot delete the group, remove the owner or change roles.
    assert (await api.call("DELETE", f"/v1/groups/{gid}", token=admin.token)).status == 403
    assert (
        await api.call("DELETE", f"/v1/groups/{gid}/members/{owner.id}", token=admin.token)
    ).status == 403
    reply = await api.call(
        "PUT",
        f"/v1/groups/{gid}/members/{member.id}/role",
        json={"role": "admin"},
        token=admin.token,
    )
    assert reply.status == 403
    # The owner's own role is not changed by a role change.
    reply = await api.call(
        "PUT",
        f"/v1/groups/{gid}/members/{owner.id}/role",
        json={"role": "member"},
        token=owner.token,
    )
    assert reply.status == 409

    # The removed member no longer sees the group; the rest see the current state.
    assert (await get_group(api, extra, gid)).status == 404
    view = (await get_group(api, owner, gid)).body
    assert view["name"] == "Readers"
    assert roles(view) == {owner.id: "owner", member.id: "member", admin.id: "admin"}
    assert next(m["user_id"] for m in view["members"]) == owner.id

    # A member leaves.
    assert (
        await api.call("DELETE", f"/v1/groups/{gid}/members/{member.id}", token=member.token)
    ).status == 204
    assert (await get_group(api, member, gid)).status == 404
    mine = await api.call("GET", "/v1/groups", token=member.token)
    assert mine.status == 200
    assert gid not in [g["id"] for g in mine.body["items"]]

    # "My groups" lists it with the caller's role and the member count.
    listed = await api.call("GET", "/v1/groups", token=admin.token)
    assert listed.status == 200
    [summary] = [g for g in listed.body["items"] if g["id"] == gid]
    assert summary["role"] == "admin"
    assert summary["member_count"] == 2
    assert summary["name"] == "Readers"

    # The owner deletes it: gone for everyone.
    assert (await api.call("DELETE", f"/v1/groups/{gid}", token=owner.token)).status == 204
    for user in (owner, admin):
        assert (await get_group(api, user, gid)).status == 404
        listed = await api.call("GET", "/v1/groups", token=user.token)
        assert gid not in [g["id"] for g in listed.body["items"]]


async def test_invalid_input_gets_clear_4xx(api: Api) -> None:
    owner, other = await api.new_user("g"), await api.new_user("g")
    for body in [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {"name": "ok", "member_ids": "not a list"},
        {"name": "ok", "surprise": 1},
        {},
    ]:
        reply = await api.call("POST", "/v1/groups", json=body, token=owner.token)
        assert reply.status == 422, (body, reply)
    unknown = "0193f1c2-0000-7000-8000-000000000000"
    reply = await api.call(
        "POST", "/v1/groups", json={"name": "g", "member_ids": [unknown]}, token=owner.token
    )
    assert reply.status == 404
    assert reply.error_code() == "user_not_found"
    assert (await api.call("POST", "/v1/groups", json={"name": "g"})).status == 401

    group = await create_group(api, owner, "valid")
    gid = group["id"]
    reply = await api.call("PUT", f"/v1/groups/{gid}/members/{unknown}", token=owner.token)
    assert reply.status == 404
    assert reply.error_code() == "user_not_found"
    reply = await api.call(
        "PUT",
        f"/v1/groups/{gid}/members/{other.id}/role",
        json={"role": "owner"},
        token=owner.token,
    )
    assert reply.status == 422
    reply = await api.call(
        "PUT",
        f"/v1/groups/{gid}/members/{other.id}/role",
        json={"role": "admin"},
        token=owner.token,
    )
    assert reply.status == 404
    assert reply.error_code() == "member_not_found"
    assert (await api.call("GET", "/v1/groups/not-a-group!", token=owner.token)).status == 404
    assert (
        await api.call("GET", "/v1/groups", params={"limit": "0"}, token=owner.token)
    ).status == 422


async def test_my_groups_are_paginated(api: Api) -> None:
    user = await api.new_user("g")
    created = [(await create_group(api, user, f"g{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = await api.call("GET", "/v1/groups", params=params, token=user.token)
        assert page.status == 200
        assert len(page.body["items"]) <= 2
        seen += [g["id"] for g in page.body["items"]]
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert seen == created  # oldest first, nothing twice, nothing lost


async def test_owner_leaving_hands_over_to_longest_standing_admin_then_member(api: Api) -> None:
    owner, m1, a1, a2 = [await api.new_user("g") for _ in range(4)]
    gid = (await create_group(api, owner, "handover"))["id"]
    for user in (m1, a1, a2):  # joined in this order
        assert (
            await api.call("PUT", f"/v1/groups/{gid}/members/{user.id}", token=owner.token)
        ).status == 200
    for user in (a2, a1):  # promotion order does not matter, standing does
        reply = await api.call(
            "PUT",
            f"/v1/groups/{gid}/members/{user.id}/role",
            json={"role": "admin"},
            token=owner.token,
        )
        assert reply.status == 200

    assert (
        await api.call("DELETE", f"/v1/groups/{gid}/members/{owner.id}", token=owner.token)
    ).status == 204
    view = (await get_group(api, a1, gid)).body
    assert view["owner_id"] == a1.id
    assert roles(view) == {
        a1.id: "owner",
        a2.id: "admin",
        m1.id: "member",
    }
    assert (await get_group(api, owner, gid)).status == 404

    assert (
        await api.call("DELETE", f"/v1/groups/{gid}/members/{a1.id}", token=a1.token)
    ).status == 204
    assert (await get_group(api, a2, gid)).body["owner_id"] == a2.id

    assert (
        await api.call("DELETE", f"/v1/groups/{gid}/members/{a2.id}", token=a2.token)
    ).status == 204
    view = (await get_group(api, m1, gid)).body
    assert view["owner_id"] == m1.id
    assert roles(view) == {m1.id: "owner"}

    # The last member leaving deletes the group.
    assert (
        await api.call("DELETE", f"/v1/groups/{gid}/members/{m1.id}", token=m1.token)
    ).status == 204
    assert (await get_group(api, m1, gid)).status == 404
    listed = await api.call("GET", "/v1/groups", token=m1.token)
    assert gid not in [g["id"] for g in listed.body["items"]]


async def test_account_deletion_leaves_groups_with_hand_over(api: Api) -> None:
    owner, admin, member = [await api.new_user("g") for _ in range(3)]
    gid = (await create_group(api, owner, "deleted owner", [member]))["id"]
    assert (
        await api.call("PUT", f"/v1/groups/{gid}/members/{admin.id}", token=owner.token)
    ).status == 200
    reply = await api.call(
        "PUT",
        f"/v1/groups/{gid}/members/{admin.id}/role",
        json={"role": "admin"},
        token=owner.token,
    )
    assert reply.status == 200
    solo = (await create_group(api, owner, "alone"))["id"]

    assert (
        await api.call(
            "DELETE", "/v1/users/me", token=owner.token, json={"current_password": owner.password}
        )
    ).status == 204

    view = await eventually(
        lambda: get_group(api, member, gid),
        lambda r: r.status == 200 and owner.id not in roles(r.body),
    )
    assert view.status == 200, view
    assert view.body["owner_id"] == admin.id
    assert roles(view.body) == {admin.id: "owner", member.id: "member"}
    # The group the deleted owner was alone in is gone.
    gone = await eventually(lambda: get_group(api, admin, solo), lambda r: r.status == 404)
    assert gone.status == 404
    # A deleted account cannot be added back.
    reply = await api.call("PUT", f"/v1/groups/{gid}/members/{owner.id}", token=admin.token)
    assert reply.status == 404
    assert reply.error_code() == "user_not_found"


async def test_group_size_limit(api: Api, system: RunningSystem) -> None:
    """A full group answers 409 group_full (group_service restarted with a small limit)."""
    users = [await api.new_user("g") for _ in range(5)]
    owner, a, b, c, d = users
    service = system.services["group_service"]
    saved_env = dict(service.env)
    service.terminate()
    service.env = {**saved_env, "GROUP_SERVICE_MAX_GROUP_SIZE": "3"}
    service.start()
    service.wait_ready()
    try:
        reply = await api.call(
            "POST",
            "/v1/groups",
            json={"name": "too big", "member_ids": [a.id, b.id, c.id]},
            token=owner.token,
        )
        assert reply.status == 409, reply
        assert reply.error_code() == "group_full"
        assert reply.body["error"]["details"]["max_group_size"] == 3
        gid = (await create_group(api, owner, "full", [a, b]))["id"]
        reply = await api.call("PUT", f"/v1/groups/{gid}/members/{c.id}", token=owner.token)
        assert reply.status == 409
        assert reply.error_code() == "group_full"
        # Re-adding a member of a full group is still fine; making room lets c in.
        assert (
            await api.call("PUT", f"/v1/groups/{gid}/members/{a.id}", token=owner.token)
        ).status == 200
        assert (
            await api.call("DELETE", f"/v1/groups/{gid}/members/{b.id}", token=owner.token)
        ).status == 204
        assert (
            await api.call("PUT", f"/v1/groups/{gid}/members/{c.id}", token=owner.token)
        ).status == 200
        assert (
            await api.call("PUT", f"/v1/groups/{gid}/members/{d.id}", token=owner.token)
        ).status == 409
        assert len((await get_group(api, owner, gid)).body["members"]) == 3
    finally:
        service.terminate()
        service.env = saved_env
        service.start()
        service.wait_ready()

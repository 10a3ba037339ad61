"""group_service is idempotent: commands delivered twice (at-least-once) apply once.

The duplicates are published straight onto groups.commands.v1 of the running
system, as a producer retry or a redelivered batch would put them there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from libs.bus.producer import Producer
from libs.contracts.groups import (
    AddMember,
    AddMemberPayload,
    BlockPayload,
    BlockUser,
    CreateGroup,
    CreateGroupPayload,
    RenameGroup,
    RenameGroupPayload,
)
from libs.contracts.topics import GROUPS_COMMANDS
from libs.ids import new_id
from tests.groups.helpers import eventually
from tests.support import endpoints
from tests.support.client import Api, Reply
from tests.support.system import RunningSystem


@pytest.fixture
async def producer(system: RunningSystem, namespace: str) -> AsyncIterator[Producer]:
    producer = Producer(endpoints.kafka(), namespace)
    await producer.start()
    yield producer
    await producer.stop()


async def test_duplicated_commands_apply_once(api: Api, producer: Producer) -> None:
    owner, joiner, other = [await api.new_user("r") for _ in range(3)]
    group_id = new_id()
    create = CreateGroup.of(
        CreateGroupPayload(
            group_id=group_id, owner_id=owner.id, name="twice", member_ids=(other.id,)
        )
    )
    add = AddMember.of(AddMemberPayload(group_id=group_id, actor_id=owner.id, user_id=joiner.id))
    rename = RenameGroup.of(
        RenameGroupPayload(group_id=group_id, actor_id=owner.id, name="renamed")
    )
    block = BlockUser.of(BlockPayload(blocker_id=owner.id, blocked_id=joiner.id))

    # Each command twice; a late duplicate of CreateGroup after the rename.
    for command in (create, create, add, add, rename, create):
        await producer.send_and_wait(GROUPS_COMMANDS, group_id, command)
    await producer.send_and_wait(GROUPS_COMMANDS, owner.id, block)
    await producer.send_and_wait(GROUPS_COMMANDS, owner.id, block)

    async def view() -> Reply:
        return await api.call("GET", f"/v1/groups/{group_id}", token=owner.token)

    reply = await eventually(
        view,
        lambda r: r.status == 200 and r.body["name"] == "renamed" and len(r.body["members"]) == 3,
    )
    assert reply.status == 200, reply
    assert reply.body["name"] == "renamed"  # the late CreateGroup did not reset it
    members = reply.body["members"]
    assert sorted(m["user_id"] for m in members) == sorted([owner.id, joiner.id, other.id])
    assert {m["user_id"]: m["role"] for m in members}[owner.id] == "owner"

    blocks = await eventually(
        lambda: api.call("GET", "/v1/blocks", token=owner.token),
        lambda r: r.status == 200 and r.body["items"] != [],
    )
    assert blocks.body["items"] == [{"user_id": joiner.id}]

    listed = await api.call("GET", "/v1/groups", token=joiner.token)
    assert [g["id"] for g in listed.body["items"]].count(group_id) == 1

"""group_service crashing (SIGKILL) loses nothing: commands wait in Kafka, state stays."""

from __future__ import annotations

import asyncio

from tests.groups.helpers import eventually
from tests.support.client import Api
from tests.support.system import RunningSystem


async def test_commands_sent_while_group_service_is_down_take_effect(
    api: Api, system: RunningSystem
) -> None:
    owner, member, pest, newcomer = [await api.new_user("k") for _ in range(4)]
    created = await api.call(
        "POST", "/v1/groups", json={"name": "crash", "member_ids": [member.id]}, token=owner.token
    )
    assert created.status == 201
    gid = created.body["id"]
    before = await api.call("GET", f"/v1/groups/{gid}", token=owner.token)

    service = system.services["group_service"]
    service.kill()
    try:
        # Published to Kafka while nobody consumes: answered late (or 504), never lost.
        block = asyncio.create_task(api.call("PUT", f"/v1/blocks/{pest.id}", token=owner.token))
        await asyncio.sleep(1)
    finally:
        await asyncio.to_thread(service.start)
        await asyncio.to_thread(service.wait_ready, 90.0)
    answered = await block
    assert answered.status in (204, 504), answered

    blocks = await eventually(
        lambda: api.call("GET", "/v1/blocks", token=owner.token),
        lambda r: r.status == 200 and r.body["items"] != [],
        timeout_s=60,
    )
    assert blocks.body["items"] == [{"user_id": pest.id}]
    # What was there before the crash is still there, and new commands work.
    assert (await api.call("GET", f"/v1/groups/{gid}", token=owner.token)).body == before.body
    # (not pest: adds never cross a block)
    added = await api.call("PUT", f"/v1/groups/{gid}/members/{newcomer.id}", token=owner.token)
    assert added.status == 200, added

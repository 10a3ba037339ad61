"""Read-your-writes before persistence: with the persister stopped, a sent message is
already in history (both participants, and the group) and in sync."""

from __future__ import annotations

import asyncio

import pytest

from tests.messages.conftest import all_history, create_group, send_ok
from tests.support.client import Api
from tests.support.system import RunningSystem


@pytest.mark.fault
async def test_history_and_sync_show_a_message_the_persister_has_not_written(
    api: Api, system: RunningSystem
) -> None:
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    group_id = await create_group(api, ada, [bob])
    earlier = await send_ok(api, bob, to_user=ada.id, content="before the stop")
    persister = system.services["persister"]
    await asyncio.to_thread(persister.kill)
    try:
        direct = [await send_ok(api, ada, to_user=bob.id, content=f"d{i}") for i in range(3)]
        grouped = await send_ok(api, bob, to_group=group_id, content="to the group")
        for viewer, other in ((ada, bob), (bob, ada)):
            ids = [m["id"] for m in await all_history(api, viewer, with_user=other.id)]
            assert ids == [m["id"] for m in reversed(direct)] + [earlier["id"]]
        group_log = await all_history(api, ada, group=group_id)
        assert [m["id"] for m in group_log] == [grouped["id"]]
        sync = await api.call("GET", "/v1/sync", token=bob.token)
        assert sync.status == 200
        assert {m["id"] for m in sync.body["messages"]} == {m["id"] for m in direct} | {
            grouped["id"]
        }
    finally:
        await asyncio.to_thread(persister.start)
        await asyncio.to_thread(persister.wait_ready, 120)

"""A read mark never runs ahead of the conversation (issue 15, finding 11)."""

from __future__ import annotations

import aiohttp

from tests.realtime.test_delivery import make_group, send
from tests.realtime.wsclient import connect
from tests.support.client import Api
from tests.support.system import RunningSystem


async def test_a_read_mark_past_the_last_message_is_clamped_to_it(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    api = Api(http, system.gateway_url)
    ada, bob = await api.new_user("ra"), await api.new_user("rb")
    group_id = await make_group(api, ada, bob)
    socket = await connect(http, system.gateway_url, bob.token)
    try:
        await send(api, ada, to_user_id=bob.id, content="one")
        last = await send(api, ada, to_user_id=bob.id, content="two")
        in_group = await send(api, ada, to_group_id=group_id, content="hi all")
        # Pushed: delivery_service has seen them, as it has what any client shows.
        await socket.wait_messages({last["id"], in_group["id"]})
    finally:
        await socket.close()

    direct = await api.call(
        "POST",
        f"/v1/conversations/users/{ada.id}/read",
        json={"seq": 1_000_000},
        token=bob.token,
    )
    assert direct.status == 200, direct
    assert direct.body["read_seq"] == last["seq"]

    group = await api.call(
        "POST",
        f"/v1/conversations/groups/{group_id}/read",
        json={"seq": 2**53},
        token=bob.token,
    )
    assert group.status == 200, group
    assert group.body["read_seq"] == in_group["seq"]

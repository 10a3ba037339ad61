"""A crashed service takes its partitions back at once (static group membership).

Each consumer joins its group as `<group>@<host>:<HTTP port>` (libs/service.py,
KAFKA_STATIC_MEMBERSHIP). After a SIGKILL and a restart on the same port, the new
process is the same static member: the coordinator hands it the partitions without
a rebalance, instead of waiting for the dead member's session to time out (10 s,
during which its partitions' commands wait: the first send after a restart took
~8 s). The test watches the group's state from the kill until a send to every
partition has been answered: it never leaves Stable.
"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient

from libs.service import static_member_id
from libs.settings import ServiceSettings
from tests.support import endpoints
from tests.support.client import Api
from tests.support.system import RunningSystem


async def _group_state(admin: AIOKafkaAdminClient, group: str) -> tuple[str, int]:
    [response] = await admin.describe_consumer_groups([group])
    described = response.to_object()["groups"][0]
    return described["state"], len(described["members"])


async def test_a_killed_message_service_rejoins_without_a_rebalance(
    api: Api, system: RunningSystem, namespace: str
) -> None:
    sender = await api.new_user("st")
    receivers = [await api.new_user("rc") for _ in range(8)]  # spread over the partitions

    async def send_to_each(content: str) -> None:
        for receiver in receivers:
            body = {"to_user_id": receiver.id, "content": content}
            reply = await api.call("POST", "/v1/messages", token=sender.token, json=body)
            assert reply.status == 201, reply

    await send_to_each("before")
    service = system.services["message_service"]
    group = f"{namespace}.message_service"
    assert static_member_id(ServiceSettings(http_port=service.port), group) is not None
    admin = AIOKafkaAdminClient(bootstrap_servers=endpoints.kafka())
    await admin.start()
    try:
        assert await _group_state(admin, group) == ("Stable", 1)
        seen: set[str] = set()
        answered = asyncio.Event()

        async def watch() -> None:
            while not answered.is_set():
                state, _ = await _group_state(admin, group)
                seen.add(state)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        await asyncio.to_thread(service.restart)  # SIGKILL, start, wait for /readyz
        await send_to_each("after the restart")
        answered.set()
        await watcher
        assert seen == {"Stable"}, f"the group went through {sorted(seen)}"
        assert await _group_state(admin, group) == ("Stable", 1)
    finally:
        await admin.close()

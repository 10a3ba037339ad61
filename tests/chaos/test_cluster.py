"""Cluster mode runs the production shape, and the core flows work through its load balancer.

Against `python -m deploy.local.cluster up`: three brokers holding every topic
with three replicas, two ready instances of every service, and register, login,
1:1 and group sends, WebSocket push through HAProxy, history and sync.
"""

from __future__ import annotations

import asyncio
import urllib.request
import uuid

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from deploy.local import cluster
from libs.contracts.topics import MESSAGES_COMMANDS, namespaced
from tests.realtime.wsclient import connect
from tests.support.client import Api

pytestmark = [pytest.mark.timeout(600)]


async def test_three_brokers_hold_every_topic_with_three_replicas_and_min_isr_two(
    cluster_config: cluster.ClusterConfig,
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster_config.kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_cluster()
        assert len(described["brokers"]) == 3
        topic = namespaced(MESSAGES_COMMANDS, cluster_config.namespace)
        (info,) = await admin.describe_topics([topic])
        assert info["partitions"]
        assert all(len(p["replicas"]) == 3 for p in info["partitions"])
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        configs = {
            entry[0]: entry[1]
            for response in responses
            for r in response.resources
            for entry in r[4]
        }
        assert configs["min.insync.replicas"] == "2"
        assert configs["unclean.leader.election.enable"] == "false"
    finally:
        await admin.close()


def test_two_ready_instances_of_every_service(cluster_config: cluster.ClusterConfig) -> None:
    for service in cluster.SERVICES:
        for instance in cluster.INSTANCES:
            url = cluster_config.instance_url(service, instance) + "/readyz"
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200, url


async def test_core_flows_through_the_load_balancer(
    cluster_config: cluster.ClusterConfig,
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        api = Api(http, cluster_config.url)
        alice, bob, carol = [await api.new_user("cl") for _ in range(3)]
        group = await api.call(
            "POST",
            "/v1/groups",
            token=alice.token,
            json={"name": "cluster", "member_ids": [bob.id, carol.id]},
        )
        assert group.status == 201, group
        group_id = group.body["id"]
        # Two sockets through HAProxy (least connections spreads them over the gateways).
        bob_ws = await connect(http, cluster_config.url, bob.token)
        carol_ws = await connect(http, cluster_config.url, carol.token)
        group_msg_id = str(uuid.uuid4())
        try:
            direct = await api.call(
                "POST",
                "/v1/messages",
                token=alice.token,
                json={"to_user_id": bob.id, "content": "hi", "client_msg_id": str(uuid.uuid4())},
            )
            assert direct.status == 201, direct
            to_group = await api.call(
                "POST",
                "/v1/messages",
                token=alice.token,
                json={"to_group_id": group_id, "content": "all", "client_msg_id": group_msg_id},
            )
            assert to_group.status == 201, to_group
            again = await api.call(
                "POST",
                "/v1/messages",
                token=alice.token,
                json={"to_group_id": group_id, "content": "all", "client_msg_id": group_msg_id},
            )
            assert again.body["id"] == to_group.body["id"]

            await bob_ws.wait_messages({direct.body["id"], to_group.body["id"]}, timeout=60)
            await carol_ws.wait_messages({to_group.body["id"]}, timeout=60)

            history = await api.call(
                "GET", "/v1/messages", token=bob.token, params={"with_user": alice.id}
            )
            assert history.status == 200, history
            assert [m["id"] for m in history.body["messages"]] == [direct.body["id"]]
            group_history = await api.call(
                "GET", "/v1/messages", token=carol.token, params={"group": group_id}
            )
            assert [m["id"] for m in group_history.body["messages"]] == [to_group.body["id"]]

            synced = await _sync_until(api, bob.token, 2)
            assert {m["id"] for m in synced} == {direct.body["id"], to_group.body["id"]}
        finally:
            await bob_ws.close()
            await carol_ws.close()


async def _sync_until(api: Api, token: str, count: int) -> list[dict]:
    """Sync pages; a seq not yet persisted stops the run, so poll within a bound."""
    for _ in range(120):
        reply = await api.call("GET", "/v1/sync", token=token)
        assert reply.status == 200, reply
        if len(reply.body["messages"]) >= count:
            return reply.body["messages"]
        await asyncio.sleep(0.5)
    raise AssertionError(f"sync never showed {count} messages: {reply.body}")

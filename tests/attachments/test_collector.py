"""The gateway's collector of unreferenced uploads, as it runs: a gateway started with
a one-second grace period and interval deletes an upload no message references and
keeps one a message carries. (The 24-hour default is the same code with another
number: test_attachments_api.py moves the collector's clock instead.)"""

from __future__ import annotations

import asyncio

from tests.attachments.conftest import upload
from tests.support.client import Api
from tests.support.system import RunningSystem


async def test_a_gateway_collects_unreferenced_uploads(api: Api, system: RunningSystem) -> None:
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    loose = await upload(api, ada.token, b"nobody will see this")
    kept = await upload(api, ada.token, b"bob will see this")
    sent = await api.call(
        "POST",
        "/v1/messages",
        token=ada.token,
        json={"to_user_id": bob.id, "attachment_ids": [kept["id"]]},
    )
    assert sent.status == 201, sent
    collector = system.add_gateway(
        "gc",
        extra_env={
            "GATEWAY_ATTACHMENT_UNREFERENCED_TTL_S": "1",
            "GATEWAY_ATTACHMENT_COLLECT_INTERVAL_S": "1",
        },
    )
    try:
        status = 200
        for _ in range(300):
            status = (
                await api.call("GET", f"/v1/attachments/{loose['id']}", token=ada.token)
            ).status
            if status == 404:
                break
            await asyncio.sleep(0.2)
        assert status == 404
        assert (
            await api.call("GET", f"/v1/attachments/{kept['id']}", token=bob.token)
        ).status == 200
    finally:
        collector.terminate()
        system.extra_gateways.remove(collector)

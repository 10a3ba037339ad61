"""Fixtures for the notification tests: the API, and a real push receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.notifications.receiver import Receiver, start_receiver
from tests.support.client import Api


@pytest.fixture
def api(http: aiohttp.ClientSession, gateway_url: str) -> Api:
    return Api(http, gateway_url)


@pytest.fixture
async def receiver(api: Api) -> AsyncIterator[Receiver]:
    found, runner = await start_receiver()
    key = await api.call("GET", "/v1/push-targets/vapid-key")
    assert key.status == 200, key
    found.vapid_public_key = key.body["public_key"]
    try:
        yield found
    finally:
        found.release.set()
        await runner.cleanup()

"""Fixtures of the accounts tests: an API client and the namespace's Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys
from tests.support import endpoints
from tests.support.client import Api
from tests.support.system import RunningSystem


@pytest.fixture
def api(http: aiohttp.ClientSession, gateway_url: str) -> Api:
    return Api(http, gateway_url)


@pytest.fixture
def keys(system: RunningSystem) -> RedisKeys:
    return RedisKeys(system.namespace)


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(endpoints.redis_url(), decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()

"""Fixtures of the accounts tests: an API client and the namespace's Redis."""

from __future__ import annotations

import aiohttp
import pytest

from libs.contracts.keys import RedisKeys
from tests.support.client import Api
from tests.support.system import RunningSystem


@pytest.fixture
def api(http: aiohttp.ClientSession, gateway_url: str) -> Api:
    return Api(http, gateway_url)


@pytest.fixture
def keys(system: RunningSystem) -> RedisKeys:
    return RedisKeys(system.namespace)

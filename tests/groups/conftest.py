"""Fixtures for the groups and blocks tests."""

from __future__ import annotations

import aiohttp
import pytest

from tests.support.client import Api


@pytest.fixture
def api(http: aiohttp.ClientSession, gateway_url: str) -> Api:
    return Api(http, gateway_url)

"""Session fixtures: the real infrastructure, and the whole system in a fresh namespace.

`infra` makes sure Redis, Kafka and both FerretDB shards run (starting them with
the same launcher as `make up` if needed). `system` starts the seven services in a
namespace of their own for this test session and stops them (SIGTERM) at the end.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.support import endpoints
from tests.support.system import ROOT, RunningSystem

#: The suite sends, reads and fails logins from one address far faster than a person:
#: its shared gateway raises those limits; tests of the limits use gateways of their own.
SUITE_RATE_LIMITS = {
    "GATEWAY_RATE_SEND_PER_USER_BURST": "100000",
    "GATEWAY_RATE_GROUP_CHANGES_PER_USER_BURST": "100000",
    "GATEWAY_RATE_READ_MARKS_PER_USER_BURST": "100000",
    "GATEWAY_RATE_UPLOADS_PER_USER_BURST": "100000",
    "GATEWAY_RATE_LOGIN_FAILURES_PER_IP_BURST": "100000",
}


@pytest.fixture(scope="session")
def infra() -> None:
    from deploy.local.stack import ensure_running

    ensure_running()


@pytest.fixture
async def redis(infra: None) -> AsyncIterator[Redis]:
    """A client of the local Redis (strings decoded), closed after the test."""
    client = Redis.from_url(endpoints.redis_url(), decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def namespace() -> str:
    return "t" + secrets.token_hex(5)


@pytest.fixture(scope="session")
def system(infra: None, namespace: str) -> Iterator[RunningSystem]:
    running = RunningSystem.start(
        namespace,
        log_dir=ROOT / ".local" / "test-logs" / namespace,
        # The gateways' backstop poll of socket sessions is pushed out of the tests'
        # reach, so a socket closed on revocation was closed by the announcement;
        # the poll itself is tested on a gateway of its own.
        extra_env={
            "GATEWAY_WS_SESSION_POLL_S": "600",
            # The notification tests' receiver listens on 127.0.0.1 over http.
            "GATEWAY_PUSH_TARGETS_ALLOW_INSECURE": "true",
            "NOTIFIER_COALESCE_WINDOW_S": "1.5",
            "NOTIFIER_SEND_TIMEOUT_S": "4",
            "NOTIFIER_BACKOFF_S": "0.2",
            **SUITE_RATE_LIMITS,
        },
    )
    try:
        yield running
    finally:
        running.stop()
        running.discard()


@pytest.fixture(scope="session")
def gateway_url(system: RunningSystem) -> str:
    return system.gateway_url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def log_dir_for(namespace: str) -> Path:
    return ROOT / ".local" / "test-logs" / namespace

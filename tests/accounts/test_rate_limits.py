"""Rate limits of registration and login: 429 with Retry-After, per username and per address."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import aiohttp
import pytest

from gateway.ratelimit import RateLimitSettings
from tests.support.client import Api, unique_username
from tests.support.system import RunningSystem, ServiceProcess, free_port


async def test_login_attempts_per_username_are_limited(api: Api) -> None:
    victim = await api.new_user("rl")
    bystander = await api.new_user("rlb")
    burst = RateLimitSettings().login_per_username_burst
    replies = [await api.login(victim.username, "wrong password") for _ in range(burst + 1)]
    statuses = [r.status for r in replies]
    assert 429 in statuses, statuses
    limited = next(r for r in replies if r.status == 429)
    assert limited.error_code() == "rate_limited"
    assert set(limited.body["error"]) == {"code", "message", "details"}
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.body["error"]["details"]["retry_after_s"] > 0
    # Even the right password is refused while the bucket is empty...
    assert (await api.login(victim.username, victim.password)).status == 429
    # ...and the limit is per username: others log in as usual.
    assert (await api.login(bystander.username, bystander.password)).status == 201


@pytest.fixture(scope="module")
def strict_gateway(system: RunningSystem) -> Iterator[ServiceProcess]:
    """A second gateway on the same system with tight per-address limits."""
    env = {
        **system.env,
        "GATEWAY_INSTANCE_ID": f"{system.namespace}-gw-strict-{secrets.token_hex(3)}",
        "GATEWAY_RATE_REGISTER_PER_IP_BURST": "3",
        "GATEWAY_RATE_REGISTER_PER_IP_PER_MINUTE": "1",
        "GATEWAY_RATE_LOGIN_PER_IP_BURST": "4",
        "GATEWAY_RATE_LOGIN_PER_IP_PER_MINUTE": "1",
        "GATEWAY_RATE_TRUSTED_PROXIES": "127.0.0.1",
    }
    gateway = ServiceProcess("gateway", env, free_port(), system.log_dir, instance="-strict")
    gateway.start()
    try:
        gateway.wait_ready()
        yield gateway
    finally:
        gateway.terminate()


async def test_registrations_and_logins_per_address_are_limited(
    http: aiohttp.ClientSession, strict_gateway: ServiceProcess, api: Api
) -> None:
    strict = Api(http, strict_gateway.url)
    registrations = [await strict.register(unique_username("ip")) for _ in range(4)]
    assert [r.status for r in registrations] == [201, 201, 201, 429]
    assert int(registrations[-1].headers["Retry-After"]) >= 30  # one a minute

    # Logins from this address, whatever the username, share one bucket.
    names = [r.body["username"] for r in registrations[:3]]
    logins = await asyncio.gather(
        *(strict.login(name, "correct horse battery") for name in [*names, names[0], names[1]])
    )
    assert sorted(r.status for r in logins) == [201, 201, 201, 201, 429]

    # Buckets carry their limits in their key: the main gateway's looser limits
    # for the same address are untouched.
    assert (await api.register(unique_username("ok"))).status == 201


async def test_behind_a_trusted_proxy_the_forwarded_address_counts(
    http: aiohttp.ClientSession, strict_gateway: ServiceProcess
) -> None:
    strict = Api(http, strict_gateway.url)

    async def register_from(forwarded_for: str) -> int:
        username = unique_username("xff")
        reply = await strict.call(
            "POST",
            "/v1/users",
            json={"username": username, "password": "correct horse battery"},
            headers={"X-Forwarded-For": forwarded_for},
        )
        return reply.status

    client = "203.0.113.7"
    assert [await register_from(client) for _ in range(3)] == [201, 201, 201]
    assert await register_from(client) == 429
    # A client cannot escape by writing its own entries in front of the proxy's.
    assert await register_from(f"198.51.100.1, {client}") == 429
    # Another client behind the same proxy has its own bucket.
    assert await register_from("203.0.113.8") == 201

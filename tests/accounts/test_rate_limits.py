"""Rate limits: 429 with Retry-After on registration and login (per address, per account
and address, never per account alone), and per user on sends, group changes and read marks."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import aiohttp
import pytest

from tests.support.client import Api, unique_username
from tests.support.system import RunningSystem, ServiceProcess, free_port


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


@pytest.fixture(scope="module")
def guarded_gateway(system: RunningSystem) -> Iterator[ServiceProcess]:
    """A gateway behind a trusted "proxy" (the test sets X-Forwarded-For) with tiny
    failure and per-user buckets, refilled once a minute."""
    env = {
        **system.env,
        "GATEWAY_INSTANCE_ID": f"{system.namespace}-gw-guard-{secrets.token_hex(3)}",
        "GATEWAY_RATE_TRUSTED_PROXIES": "127.0.0.1",
        "GATEWAY_RATE_LOGIN_FAILURES_PER_ACCOUNT_IP_BURST": "3",
        "GATEWAY_RATE_LOGIN_FAILURES_PER_ACCOUNT_IP_PER_MINUTE": "1",
        "GATEWAY_RATE_LOGIN_FAILURES_PER_IP_BURST": "5",
        "GATEWAY_RATE_LOGIN_FAILURES_PER_IP_PER_MINUTE": "1",
        "GATEWAY_RATE_SEND_PER_USER_BURST": "3",
        "GATEWAY_RATE_SEND_PER_USER_PER_MINUTE": "1",
        "GATEWAY_RATE_GROUP_CHANGES_PER_USER_BURST": "2",
        "GATEWAY_RATE_GROUP_CHANGES_PER_USER_PER_MINUTE": "1",
        "GATEWAY_RATE_READ_MARKS_PER_USER_BURST": "3",
        "GATEWAY_RATE_READ_MARKS_PER_USER_PER_MINUTE": "1",
        "GATEWAY_RATE_UPLOADS_PER_USER_BURST": "2",
        "GATEWAY_RATE_UPLOADS_PER_USER_PER_MINUTE": "1",
    }
    gateway = ServiceProcess("gateway", env, free_port(), system.log_dir, instance="-guard")
    gateway.start()
    try:
        gateway.wait_ready()
        yield gateway
    finally:
        gateway.terminate()


async def _login_from(api: Api, address: str, username: str, password: str) -> int:
    reply = await api.call(
        "POST",
        "/v1/sessions",
        json={"username": username, "password": password},
        headers={"X-Forwarded-For": address},
    )
    return reply.status


async def test_failed_logins_lock_out_the_attackers_address_not_the_victim(
    http: aiohttp.ClientSession, guarded_gateway: ServiceProcess, api: Api
) -> None:
    victim = await api.new_user("victim")
    guarded = Api(http, guarded_gateway.url)
    attacker = "198.51.100.66"
    tries = [await _login_from(guarded, attacker, victim.username, "guess") for _ in range(4)]
    assert tries == [401, 401, 401, 429]
    # The attacker's address stays locked out of this account, right password or not...
    assert await _login_from(guarded, attacker, victim.username, victim.password) == 429
    # ...but the victim, from anywhere else, is not locked out.
    assert await _login_from(guarded, "203.0.113.20", victim.username, victim.password) == 201
    # A successful login does not charge anything: again and again it works.
    for _ in range(5):
        assert await _login_from(guarded, "203.0.113.20", victim.username, victim.password) == 201


async def test_one_address_spraying_passwords_across_accounts_is_stopped(
    http: aiohttp.ClientSession, guarded_gateway: ServiceProcess, api: Api
) -> None:
    accounts = [await api.new_user("spray") for _ in range(6)]
    guarded = Api(http, guarded_gateway.url)
    sprayer = "198.51.100.77"
    statuses = [await _login_from(guarded, sprayer, a.username, "Summer2026!") for a in accounts]
    assert statuses == [401] * 5 + [429]
    limited = await guarded.call(
        "POST",
        "/v1/sessions",
        json={"username": accounts[0].username, "password": accounts[0].password},
        headers={"X-Forwarded-For": sprayer},
    )
    assert limited.status == 429
    assert limited.body["error"]["details"]["limit"] == "login_fail_ip"
    assert int(limited.headers["Retry-After"]) >= 1
    # Other addresses are unaffected.
    assert await _login_from(guarded, "203.0.113.21", accounts[0].username, "nope") == 401


async def test_sends_are_limited_per_user_over_rest_and_websocket(
    http: aiohttp.ClientSession, guarded_gateway: ServiceProcess, api: Api
) -> None:
    from tests.realtime.wsclient import connect

    ada, bob = await api.new_user("rla"), await api.new_user("rlb")
    guarded = Api(http, guarded_gateway.url)
    body = {"to_user_id": bob.id, "content": "hi"}
    replies = [await guarded.call("POST", "/v1/messages", json=body, token=ada.token)]
    replies += [await guarded.call("POST", "/v1/messages", json=body, token=ada.token)]
    replies += [await guarded.call("POST", "/v1/messages", json=body, token=ada.token)]
    assert [r.status for r in replies] == [201, 201, 201]
    limited = await guarded.call("POST", "/v1/messages", json=body, token=ada.token)
    assert limited.status == 429, limited
    assert limited.error_code() == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 30  # one a minute

    socket = await connect(http, guarded_gateway.url, ada.token)
    try:
        await socket.send({"type": "send", "ref": "over", "message": body})
        frame = await socket.wait_for(lambda f: f.get("ref") == "over")
        assert frame["type"] == "error"
        assert frame["error"]["code"] == "rate_limited"
        assert frame["error"]["details"]["retry_after_s"] > 0
    finally:
        await socket.close()
    # The limit is per user: bob still sends.
    back = {"to_user_id": ada.id, "content": "hello"}
    assert (await guarded.call("POST", "/v1/messages", json=back, token=bob.token)).status == 201


async def test_group_changes_and_read_marks_are_limited_per_user(
    http: aiohttp.ClientSession, guarded_gateway: ServiceProcess, api: Api
) -> None:
    owner, other = await api.new_user("rlg"), await api.new_user("rlm")
    guarded = Api(http, guarded_gateway.url)
    created = await guarded.call("POST", "/v1/groups", json={"name": "g"}, token=owner.token)
    assert created.status == 201, created
    group_id = created.body["id"]
    renamed = await guarded.call(
        "PATCH", f"/v1/groups/{group_id}", json={"name": "g2"}, token=owner.token
    )
    assert renamed.status == 200, renamed
    third = await guarded.call(
        "PUT", f"/v1/groups/{group_id}/members/{other.id}", token=owner.token
    )
    assert third.status == 429, third

    path = f"/v1/conversations/users/{owner.id}/read"
    marks = [await guarded.call("POST", path, json={"seq": 1}, token=other.token) for _ in range(4)]
    assert [m.status for m in marks] == [200, 200, 200, 429]


async def test_uploads_are_limited_per_user(
    http: aiohttp.ClientSession, guarded_gateway: ServiceProcess, api: Api
) -> None:
    user = await api.new_user("rlu")
    guarded = Api(http, guarded_gateway.url)

    async def upload() -> int:
        reply = await guarded.call(
            "POST",
            "/v1/attachments",
            data=b"some bytes",
            headers={"Content-Type": "text/plain"},
            token=user.token,
        )
        return reply.status

    assert [await upload() for _ in range(3)] == [201, 201, 429]

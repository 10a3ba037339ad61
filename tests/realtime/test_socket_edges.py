"""The WebSocket's documented answers at the edges: handshake auth and Origin,
tickets, bad and oversized frames, revoked sessions, the per-user cap."""

from __future__ import annotations

import asyncio
import hashlib
import time

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.sockets import RealtimeSettings
from libs.contracts.keys import RedisKeys
from tests.realtime.test_delivery import eventually, second_gateway
from tests.realtime.wsclient import connect
from tests.support import endpoints
from tests.support.client import Api


async def handshake_status(http: aiohttp.ClientSession, url: str, **kw: object) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
        await http.ws_connect(url + "/v1/ws", **kw)  # type: ignore[arg-type]
    return failed.value.status


async def test_handshake_requires_a_valid_token(system, http) -> None:
    api = Api(http, system.gateway_url)
    url = system.gateway_url
    assert await handshake_status(http, url) == 401
    assert await handshake_status(http, url, headers={"Authorization": "Bearer nope"}) == 401
    user = await api.new_user("ws")
    assert (await api.call("DELETE", "/v1/sessions/current", token=user.token)).status == 204
    assert await handshake_status(http, url, headers=user.auth) == 401


async def test_expired_session_is_refused_at_the_handshake(system, http, namespace) -> None:
    api = Api(http, system.gateway_url)
    user = await api.new_user("exp")
    redis = Redis.from_url(endpoints.redis_url(), decode_responses=True)
    try:
        from gateway.auth import token_hash

        # Age the session past its absolute expiry, as time would.
        key = RedisKeys(namespace).session(token_hash(user.token))
        assert await redis.exists(key)
        await redis.hset(key, "expires_at", str(time.time() - 1))
    finally:
        await redis.aclose()
    assert await handshake_status(http, system.gateway_url, headers=user.auth) == 401


async def test_origin_allowlist(system, http) -> None:
    api = Api(http, system.gateway_url)
    user = await api.new_user("org")
    evil = {**user.auth, "Origin": "https://evil.example"}
    assert await handshake_status(http, system.gateway_url, headers=evil) == 403
    allowed = await connect(
        http, system.gateway_url, user.token, headers={"Origin": "http://localhost:3000"}
    )
    no_origin = await connect(http, system.gateway_url, user.token)  # not a browser
    await allowed.close()
    await no_origin.close()


async def test_single_use_ticket(system, http) -> None:
    api = Api(http, system.gateway_url)
    user = await api.new_user("tk")
    issued = await api.call("POST", "/v1/ws-ticket", token=user.token)
    assert issued.status == 201
    assert issued.body["expires_in_s"] > 0
    ticket = issued.body["ticket"]
    socket = await connect(http, system.gateway_url, params={"ticket": ticket})
    hello = socket.frames[0]
    assert hello["user_id"] == user.id
    await socket.close()
    again = await handshake_status(http, system.gateway_url, params={"ticket": ticket})
    assert again == 401
    assert (await api.call("POST", "/v1/ws-ticket")).status == 401


async def test_bad_frames_get_error_frames_and_the_socket_stays_open(system, http) -> None:
    api = Api(http, system.gateway_url)
    user = await api.new_user("bad")
    socket = await connect(http, system.gateway_url, user.token)
    await socket.ws.send_str("{not json")
    err = await socket.wait_for(lambda f: f.get("type") == "error")
    assert err["error"]["code"] == "invalid_json"
    await socket.send({"type": "teleport", "ref": "r1"})
    err = await socket.wait_for(lambda f: f.get("ref") == "r1")
    assert err["type"] == "error"
    assert err["error"]["code"] == "invalid_frame"
    await socket.send({"type": "ack", "ref": "r2", "receiver": user.id, "seq": 0})
    err = await socket.wait_for(lambda f: f.get("ref") == "r2")
    assert err["error"]["code"] == "invalid_frame"
    assert err["error"]["details"]["fields"][0]["field"].endswith("seq")
    await socket.send({"type": "read", "ref": "r3", "conversation": "group:nosuch", "seq": 1})
    err = await socket.wait_for(lambda f: f.get("ref") == "r3")
    assert err["error"]["status"] == 404
    await socket.send({"type": "typing", "ref": "r4", "conversation": f"user:{user.id}"})
    err = await socket.wait_for(lambda f: f.get("ref") == "r4")
    assert err["error"]["status"] == 422
    assert not socket.closed.is_set()
    await socket.close()


async def test_oversized_frame_closes_with_1009(system, http) -> None:
    api = Api(http, system.gateway_url)
    user = await api.new_user("big")
    socket = await connect(http, system.gateway_url, user.token)
    await socket.ws.send_str('{"type": "typing", "conversation": "' + "x" * 200_000 + '"}')
    assert await socket.wait_closed() == 1009


async def test_revoked_session_closes_its_sockets(system, http) -> None:
    api = Api(http, system.gateway_url)
    user = await api.new_user("rev")
    gateway_b = second_gateway(system)
    on_a = await connect(http, system.gateway_url, user.token)
    on_b = await connect(http, gateway_b.url, user.token)
    assert (await api.call("DELETE", "/v1/sessions/current", token=user.token)).status == 204
    # Announced on session_revocations: both gateways close at once (their poll is
    # 600 s away in the tests).
    assert await on_a.wait_closed(timeout=5) == 4001
    assert await on_b.wait_closed(timeout=5) == 4001


async def test_a_session_deleted_without_announcement_is_caught_by_the_poll(system, http) -> None:
    api = Api(http, system.gateway_url)
    user = await api.new_user("poll")
    polling = system.add_gateway("poll", extra_env={"GATEWAY_WS_SESSION_POLL_S": "1"})
    socket = await connect(http, polling.url, user.token)
    redis = Redis.from_url(endpoints.redis_url(), decode_responses=True)
    try:
        session = RedisKeys(system.namespace).session(
            hashlib.sha256(user.token.encode()).hexdigest()
        )
        await redis.delete(session)  # as if the announcement were lost
    finally:
        await redis.aclose()
    assert await socket.wait_closed(timeout=5) == 4001


async def test_a_revocation_reaches_the_session_cache_of_another_gateway(system, http) -> None:
    api = Api(http, system.gateway_url)
    user = await api.new_user("cache")
    other = Api(http, second_gateway(system).url)
    assert (await other.call("GET", "/v1/users/me", token=user.token)).status == 200  # cached
    assert (await api.call("DELETE", "/v1/sessions/current", token=user.token)).status == 204
    refused = await other.call("GET", "/v1/users/me", token=user.token)
    for _ in range(20):  # the announcement is asynchronous: allow it 1 s at most
        if refused.status == 401:
            break
        await asyncio.sleep(0.05)
        refused = await other.call("GET", "/v1/users/me", token=user.token)
    assert refused.status == 401


async def test_connection_cap_per_user(system, http) -> None:
    api = Api(http, system.gateway_url)
    user = await api.new_user("cap")
    urls = [system.gateway_url, second_gateway(system).url]  # the cap spans instances
    sockets = []
    refused = None
    while refused is None and len(sockets) < 100:
        url = urls[len(sockets) % 2]
        try:
            sockets.append(await connect(http, url, user.token))
        except aiohttp.WSServerHandshakeError as exc:
            refused = exc
    assert refused is not None
    assert refused.status == 429
    # The services run with this process's environment: the same setting.
    assert len(sockets) == RealtimeSettings().max_connections_per_user
    await sockets.pop().close()

    async def reopened() -> bool:
        try:
            sockets.append(await connect(http, urls[0], user.token))
        except aiohttp.WSServerHandshakeError:
            return False
        return True

    await eventually(reopened)
    for socket in sockets:
        await socket.close()


async def test_concurrent_handshakes_cannot_pass_the_connection_cap(system, http) -> None:
    """Many handshakes of one user at once, on two gateways: at most the cap are admitted;
    the rest get 429 or, when they raced past that check, close code 4029."""
    api = Api(http, system.gateway_url)
    user = await api.new_user("capr")
    cap = RealtimeSettings().max_connections_per_user
    urls = [system.gateway_url, second_gateway(system).url]

    async def attempt(n: int) -> object:
        try:
            return await connect(http, urls[n % 2], user.token)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        except AssertionError as exc:  # closed before its hello
            return str(exc)

    outcomes = await asyncio.gather(*(attempt(n) for n in range(3 * cap)))
    admitted = [o for o in outcomes if not isinstance(o, int | str)]
    refused = [o for o in outcomes if isinstance(o, int | str)]
    try:
        assert len(admitted) == cap, refused
        assert all(o == 429 or "(4029)" in str(o) for o in refused), refused
        redis = Redis.from_url(endpoints.redis_url(), decode_responses=True)
        try:
            entries = await redis.hgetall(RedisKeys(system.namespace).user_connections(user.id))
        finally:
            await redis.aclose()
        assert len(entries) == cap
    finally:
        for socket in admitted:
            await socket.close()


async def test_permessage_deflate_offered_by_a_client_is_declined_by_default(system, http) -> None:
    """Browsers offer compression; accepted, it costs ~90 KB of zlib state per socket
    from the first frame (GATEWAY_WS_COMPRESSION, docs/realtime.md)."""
    user = await Api(http, system.gateway_url).new_user("deflate")
    ws = await http.ws_connect(system.gateway_url + "/v1/ws", headers=user.auth, compress=15)
    try:
        assert ws.compress == 0
        hello = await ws.receive_json(timeout=5)
        assert hello["type"] == "hello"
    finally:
        await ws.close()

"""End-to-end account tests through HTTP: registration, login, sessions, profile, deletion."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time

from redis.asyncio import Redis

from libs.contracts.keys import RedisKeys
from libs.projections import user_exists
from tests.support.client import Api, Reply, unique_username

PASSWORD = "correct horse battery"


async def test_whole_account_lifecycle(api: Api) -> None:
    other = await api.new_user("peer")
    username = unique_username("life")

    registered = await api.register(username, PASSWORD, display_name="  Ada Lovelace ")
    assert registered.status == 201, registered
    me = registered.body
    assert set(me) == {"id", "username", "display_name", "created_at"}
    assert me["username"] == username
    assert me["display_name"] == "Ada Lovelace"

    login = await api.login(username, PASSWORD)
    assert login.status == 201, login
    assert set(login.body) == {"token", "user_id", "expires_at"}
    assert login.body["user_id"] == me["id"]
    token = login.body["token"]
    assert len(token) >= 43  # 32 random bytes, base64url

    got = await api.call("GET", "/v1/users/me", token=token)
    assert got.status == 200
    assert got.body == me

    renamed = await api.call(
        "PATCH", "/v1/users/me", json={"display_name": "Countess"}, token=token
    )
    assert renamed.status == 200, renamed
    assert renamed.body["display_name"] == "Countess"
    assert (await api.call("GET", "/v1/users/me", token=token)).body["display_name"] == "Countess"

    public = await api.call("GET", f"/v1/users/{me['id']}", token=other.token)
    assert public.status == 200
    assert public.body == {"id": me["id"], "username": username, "display_name": "Countess"}
    found = await api.call(
        "GET", "/v1/users", params={"username": username.upper()}, token=other.token
    )
    assert found.status == 200
    assert found.body == public.body

    logout = await api.call("DELETE", "/v1/sessions/current", token=token)
    assert logout.status == 204
    assert (await api.call("GET", "/v1/users/me", token=token)).status == 401

    token = (await api.login(username, PASSWORD)).body["token"]
    deleted = await api.call(
        "DELETE", "/v1/users/me", token=token, json={"current_password": PASSWORD}
    )
    assert deleted.status == 204, deleted

    assert (await api.call("GET", "/v1/users/me", token=token)).status == 401
    relogin = await api.login(username, PASSWORD)
    assert relogin.status == 401
    assert relogin.error_code() == "invalid_credentials"
    gone = await api.call("GET", f"/v1/users/{me['id']}", token=other.token)
    assert gone.status == 404
    assert gone.error_code() == "user_not_found"
    lookup = await api.call("GET", "/v1/users", params={"username": username}, token=other.token)
    assert lookup.status == 404

    # The name is released: someone new may take it, and is a different user.
    again = await api.register(username, "another password")
    assert again.status == 201
    assert again.body["id"] != me["id"]


async def test_deleted_user_is_gone_from_the_shared_projection(
    api: Api, redis: Redis, keys: RedisKeys
) -> None:
    user = await api.new_user("proj")
    assert await user_exists(redis, keys, user.id)
    assert (
        await api.call(
            "DELETE", "/v1/users/me", token=user.token, json={"current_password": user.password}
        )
    ).status == 204
    # Written before the reply: no waiting needed.
    assert not await user_exists(redis, keys, user.id)
    assert await redis.scard(keys.user_sessions(user.id)) == 0


async def test_username_taken_also_ignoring_case(api: Api) -> None:
    username = unique_username("dup")
    first = await api.register(username, PASSWORD)
    assert first.status == 201
    same = await api.register(username, PASSWORD)
    assert same.status == 409
    assert same.error_code() == "username_taken"
    shouted = await api.register(username.upper(), PASSWORD)
    assert shouted.status == 409
    assert shouted.error_code() == "username_taken"

    mixed = unique_username("Mixed")
    created = await api.register(mixed, PASSWORD)
    assert created.status == 201
    assert created.body["username"] == mixed.lower()
    # Logging in ignores case too.
    assert (await api.login(mixed.upper(), PASSWORD)).status == 201


async def test_concurrent_registrations_of_one_name_exactly_one_wins(api: Api) -> None:
    for _ in range(3):
        username = unique_username("race")
        replies = await asyncio.gather(*(api.register(username, PASSWORD) for _ in range(4)))
        statuses = sorted(r.status for r in replies)
        assert statuses == [201, 409, 409, 409], [(r.status, r.body) for r in replies]
        winner = next(r for r in replies if r.status == 201)
        login = await api.login(username, PASSWORD)
        assert login.status == 201
        assert login.body["user_id"] == winner.body["id"]


async def test_wrong_password_and_unknown_user_get_the_same_401(api: Api) -> None:
    user = await api.new_user("pw")
    wrong = await api.login(user.username, "not the password")
    unknown = await api.login(unique_username("nobody"), "not the password")
    assert wrong.status == unknown.status == 401
    assert wrong.body == unknown.body
    assert wrong.error_code() == "invalid_credentials"


async def test_malformed_missing_and_foreign_tokens_are_401(api: Api) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not a token"},
        {"Authorization": "Bearer " + "x" * 300},
        {"Authorization": "Bearer garbage-garbage-garbage"},
        {"Authorization": "Bearer " + secrets.token_urlsafe(32)},
    ):
        reply = await api.call("GET", "/v1/users/me", headers=headers)
        assert reply.status == 401, (headers, reply)
        assert reply.error_code() in {"missing_token", "invalid_token"}


async def test_session_is_stored_hashed_with_idle_ttl(
    api: Api, redis: Redis, keys: RedisKeys
) -> None:
    user = await api.new_user("store")
    hashed = hashlib.sha256(user.token.encode()).hexdigest()
    session = await redis.hgetall(keys.session(hashed))
    assert session["user_id"] == user.id
    assert set(session) == {"user_id", "created_at", "expires_at", "idle_s"}
    idle = int(session["idle_s"])
    assert 0 < await redis.ttl(keys.session(hashed)) <= idle
    assert float(session["expires_at"]) > time.time()
    assert hashed in await redis.smembers(keys.user_sessions(user.id))
    assert not await redis.exists(keys.session(user.token))  # never the token itself


#: The gateway trusts a checked session for up to a second (GATEWAY_AUTH_CACHE_S): a
#: change made behind its back, in Redis, must show within that (plus a margin).
AUTH_CACHE_BOUND_S = 1.0 + 0.5


async def refused_within(api: Api, token: str, seconds: float = AUTH_CACHE_BOUND_S) -> Reply:
    """Ask with `token` until it is refused; fail if that takes longer than `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        response = await api.call("GET", "/v1/users/me", token=token)
        if response.status == 401 or time.monotonic() > deadline:
            assert response.status == 401, f"still {response.status} after {seconds} s"
            return response
        await asyncio.sleep(0.05)


async def test_expired_sessions_are_401(api: Api, redis: Redis, keys: RedisKeys) -> None:
    user = await api.new_user("exp")
    key = keys.session(hashlib.sha256(user.token.encode()).hexdigest())
    assert (await api.call("GET", "/v1/users/me", token=user.token)).status == 200

    # Past its absolute expiry (as if 30 days went by) the session is refused even
    # though its key is still there.
    await redis.hset(key, "expires_at", repr(time.time() - 1))
    expired = await refused_within(api, user.token)
    assert expired.error_code() == "session_expired"

    # Idle expiry is the key's TTL: once Redis lets it lapse, the token is dead.
    second = await api.login(user.username, user.password)
    key2 = keys.session(hashlib.sha256(second.body["token"].encode()).hexdigest())
    await redis.pexpire(key2, 1)
    await asyncio.sleep(0.05)  # let the 1 ms TTL lapse (Redis expires on access)
    idle = await refused_within(api, second.body["token"])
    assert idle.error_code() == "invalid_token"


async def test_use_extends_the_idle_timeout_up_to_the_absolute_expiry(
    api: Api, redis: Redis, keys: RedisKeys
) -> None:
    user = await api.new_user("touch")
    key = keys.session(hashlib.sha256(user.token.encode()).hexdigest())
    await redis.expire(key, 100)
    assert (await api.call("GET", "/v1/users/me", token=user.token)).status == 200
    assert await redis.ttl(key) > 100  # touched back to the idle timeout
    await redis.hset(key, "expires_at", repr(time.time() + 50))
    await asyncio.sleep(AUTH_CACHE_BOUND_S)  # the gateway asks Redis again (its cache)
    assert (await api.call("GET", "/v1/users/me", token=user.token)).status == 200
    assert await redis.ttl(key) <= 50  # never past the absolute expiry


async def test_a_session_deleted_behind_the_gateway_is_refused_within_a_second(
    api: Api, redis: Redis, keys: RedisKeys
) -> None:
    """Revocation through another gateway instance: only Redis changes."""
    user = await api.new_user("elsewhere")
    for _ in range(3):  # checked once, then trusted from the gateway's cache
        assert (await api.call("GET", "/v1/users/me", token=user.token)).status == 200
    await redis.delete(keys.session(hashlib.sha256(user.token.encode()).hexdigest()))
    refused = await refused_within(api, user.token)
    assert refused.error_code() == "invalid_token"


async def test_password_change_revokes_other_sessions(api: Api) -> None:
    user = await api.new_user("chg")
    other_device = (await api.login(user.username, user.password)).body["token"]

    no_current = await api.call(
        "PATCH", "/v1/users/me", json={"new_password": "brand new pw"}, token=user.token
    )
    assert no_current.status == 422
    wrong = await api.call(
        "PATCH",
        "/v1/users/me",
        json={"current_password": "nope nope", "new_password": "brand new pw"},
        token=user.token,
    )
    assert wrong.status == 403
    assert wrong.error_code() == "wrong_password"
    assert (await api.call("GET", "/v1/users/me", token=other_device)).status == 200

    changed = await api.call(
        "PATCH",
        "/v1/users/me",
        json={"current_password": user.password, "new_password": "brand new pw"},
        token=user.token,
    )
    assert changed.status == 200, changed
    assert (await api.call("GET", "/v1/users/me", token=user.token)).status == 200
    assert (await api.call("GET", "/v1/users/me", token=other_device)).status == 401
    assert (await api.login(user.username, user.password)).status == 401
    assert (await api.login(user.username, "brand new pw")).status == 201


async def test_logout_everywhere_revokes_every_session(api: Api) -> None:
    user = await api.new_user("all")
    tokens = [user.token] + [
        (await api.login(user.username, user.password)).body["token"] for _ in range(2)
    ]
    bystander = await api.new_user("by")
    assert (await api.call("DELETE", "/v1/sessions", token=tokens[1])).status == 204
    for token in tokens:
        assert (await api.call("GET", "/v1/users/me", token=token)).status == 401
    assert (await api.call("GET", "/v1/users/me", token=bystander.token)).status == 200
    assert (await api.login(user.username, user.password)).status == 201

"""user_service behind the gateway: idempotent commands and the users projection it keeps."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from libs.bus.producer import Producer
from libs.bus.request_reply import RequestClient
from libs.contracts.envelope import Codec
from libs.contracts.keys import RedisKeys
from libs.contracts.topics import USERS_COMMANDS, USERS_EVENTS, namespaced
from libs.contracts.users import (
    USER_EVENTS,
    RegisterUser,
    RegisterUserPayload,
    UpdateProfile,
    UpdateProfilePayload,
)
from libs.errors import Conflict, Forbidden
from libs.ids import new_id
from libs.projections import USERS_PROJECTION, user_exists
from tests.support import endpoints
from tests.support.client import Api, unique_username
from tests.support.system import RunningSystem


@pytest.fixture
async def requests(system: RunningSystem) -> AsyncIterator[RequestClient]:
    """A request-reply client of its own, as a gateway has (own reply topic)."""
    producer = Producer(endpoints.kafka(), system.namespace)
    await producer.start()
    client = RequestClient(
        producer,
        bootstrap=endpoints.kafka(),
        namespace=system.namespace,
        instance_id="test-" + secrets.token_hex(4),
        default_timeout_s=20,
    )
    await client.start()
    try:
        yield client
    finally:
        await client.stop()
        await producer.stop()


async def test_a_redelivered_registration_gets_the_same_answer(
    requests: RequestClient, api: Api
) -> None:
    user_id = new_id()
    username = unique_username("idem")
    command = RegisterUser.of(
        RegisterUserPayload(user_id=user_id, username=username, password="pw-" + "x" * 10)
    )
    first = await requests.request(USERS_COMMANDS, user_id, command)
    again = await requests.request(USERS_COMMANDS, user_id, command)
    assert first == again
    assert first["id"] == user_id

    intruder = RegisterUser.of(
        RegisterUserPayload(user_id=new_id(), username=username, password="pw-" + "y" * 10)
    )
    with pytest.raises(Conflict):
        await requests.request(USERS_COMMANDS, intruder.payload.user_id, intruder)
    assert (await api.login(username, "pw-" + "x" * 10)).body["user_id"] == user_id


async def test_projection_is_rebuilt_from_mongodb_when_its_sentinel_is_gone(
    api: Api, redis: Redis, keys: RedisKeys
) -> None:
    alive = await api.new_user("keep")
    doomed = await api.new_user("gone")
    assert (
        await api.call(
            "DELETE", "/v1/users/me", token=doomed.token, json={"current_password": doomed.password}
        )
    ).status == 204

    # What a FLUSHALL does to this projection (only this namespace's keys here).
    await redis.delete(
        keys.projection_ready(USERS_PROJECTION),
        keys.user_profile(alive.id),
        keys.username(alive.username),
        keys.user_profile(doomed.id),
    )
    seen: set[int] = set()
    deadline = time.monotonic() + 20
    while True:
        reply = await api.call("GET", f"/v1/users/{alive.id}", token=alive.token)
        seen.add(reply.status)
        if reply.status == 200 or time.monotonic() > deadline:
            break
        assert reply.status == 503, reply  # never a wrong 404 while rebuilding
        assert reply.error_code() == "projection_rebuilding"
        await asyncio.sleep(0.1)
    assert reply.status == 200, seen
    assert reply.body["username"] == alive.username
    assert await redis.get(keys.username(alive.username)) == alive.id
    assert await user_exists(redis, keys, alive.id)
    # The deleted account comes back as a tombstone, not as a live user.
    assert await redis.hget(keys.user_profile(doomed.id), "deleted") == "1"
    assert not await user_exists(redis, keys, doomed.id)
    lookup = await api.call(
        "GET", "/v1/users", params={"username": doomed.username}, token=alive.token
    )
    assert lookup.status == 404
    assert (await api.login(alive.username, alive.password)).status == 201


async def test_account_changes_are_published_as_events(api: Api, system: RunningSystem) -> None:
    user = await api.new_user("evt")
    renamed = await api.call("PATCH", "/v1/users/me", json={"display_name": "E"}, token=user.token)
    assert renamed.status == 200
    assert (
        await api.call(
            "DELETE", "/v1/users/me", token=user.token, json={"current_password": user.password}
        )
    ).status == 204

    codec = Codec(*USER_EVENTS)
    consumer = AIOKafkaConsumer(
        namespaced(USERS_EVENTS, system.namespace),
        bootstrap_servers=endpoints.kafka(),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: list[tuple[str, str | None]] = []
    try:
        deadline = time.monotonic() + 20
        while len(seen) < 3 and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    event = codec.decode(record.value)
                    if event.payload.user_id == user.id:
                        key = record.key.decode() if record.key else None
                        seen.append((event.type, key))
    finally:
        await consumer.stop()
    assert seen == [
        ("UserRegistered", user.id),
        ("ProfileUpdated", user.id),
        ("UserDeleted", user.id),
    ]


async def test_a_redelivered_password_change_gets_the_same_answer(
    requests: RequestClient, api: Api
) -> None:
    """The redelivery is recognised by the command's id, not by the new password."""
    user = await api.new_user("pwchange")
    command = UpdateProfile.of(
        UpdateProfilePayload(
            user_id=user.id, current_password=user.password, new_password="pw-new-" + "z" * 8
        )
    )
    first = await requests.request(USERS_COMMANDS, user.id, command)
    again = await requests.request(USERS_COMMANDS, user.id, command)
    assert first == again
    assert (await api.login(user.username, "pw-new-" + "z" * 8)).status == 201

    # A new command with the old (now wrong) password is refused, whatever its new one.
    retry = UpdateProfile.of(
        UpdateProfilePayload(
            user_id=user.id, current_password=user.password, new_password="pw-new-" + "z" * 8
        )
    )
    with pytest.raises(Forbidden):
        await requests.request(USERS_COMMANDS, user.id, retry)

"""Forward compatibility of records, and the DLQ replay (libs/bus/dlq_replay.py).

A record written by a newer build (an extra field) is handled, not dead-lettered;
a record that was dead-lettered is brought back by the replay, once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest

from libs.bus.dlq_replay import replay
from libs.bus.producer import Producer
from libs.contracts.envelope import Codec
from libs.contracts.topics import USERS_COMMANDS, dead_letter_topic
from libs.contracts.users import RegisterUser, RegisterUserPayload
from libs.ids import new_id
from libs.settings import ServiceSettings
from tests.support import endpoints
from tests.support.client import Api, unique_username
from tests.support.system import RunningSystem


@pytest.fixture
def api(http, gateway_url: str) -> Api:
    return Api(http, gateway_url)


@pytest.fixture
async def producer(system: RunningSystem) -> AsyncIterator[Producer]:
    producer = Producer(endpoints.kafka(), system.namespace)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def _registration(password: str) -> tuple[str, str, dict]:
    user_id, username = new_id(), unique_username("fwd")
    command = RegisterUser.of(
        RegisterUserPayload(user_id=user_id, username=username, password=password)
    )
    return user_id, username, orjson.loads(command.to_bytes())


async def _logs_in(api: Api, username: str, password: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await api.login(username, password)).status == 201:
            return True
        await asyncio.sleep(0.3)
    return False


def test_records_with_fields_from_a_newer_build_decode() -> None:
    _, _, record = _registration("pw-" + "f" * 10)
    record["added_by_a_newer_build"] = {"any": "thing"}
    record["payload"]["also_new"] = 42
    decoded = Codec(RegisterUser).decode(orjson.dumps(record))
    assert isinstance(decoded, RegisterUser)
    assert decoded.payload.username == record["payload"]["username"]


async def test_a_command_with_an_unknown_field_is_handled_not_dead_lettered(
    api: Api, producer: Producer
) -> None:
    password = "pw-" + "n" * 10
    user_id, username, record = _registration(password)
    record["payload"]["field_of_a_newer_build"] = "ignored by this one"
    await producer.send_and_wait(USERS_COMMANDS, user_id, orjson.dumps(record))
    assert await _logs_in(api, username, password)


async def test_a_dead_lettered_record_is_replayed_once(
    api: Api, producer: Producer, system: RunningSystem
) -> None:
    password = "pw-" + "r" * 10
    user_id, username, record = _registration(password)
    # As a consumer that could not decode it left it: original key and bytes, source headers.
    headers = [
        ("error", b"an older build could not decode this"),
        ("source_topic", USERS_COMMANDS.encode()),
        ("source_partition", b"0"),
        ("source_offset", b"17"),
        ("consumer_group", b"user_service"),
    ]
    future = await producer.send(
        dead_letter_topic(USERS_COMMANDS), user_id, orjson.dumps(record), headers=headers
    )
    await future
    assert (await api.login(username, password)).status == 401

    settings = ServiceSettings(
        **{"KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka(), "MESSENGER_NAMESPACE": system.namespace}
    )
    dry = await replay(settings, USERS_COMMANDS, dry_run=True, idle_s=3)
    assert dry.replayed == 1
    assert (await api.login(username, password)).status == 401  # a dry run publishes nothing

    first = await replay(settings, USERS_COMMANDS, idle_s=3)
    assert (first.read, first.replayed) == (1, 1)
    assert first.errors == ["an older build could not decode this"]
    assert await _logs_in(api, username, password)

    again = await replay(settings, USERS_COMMANDS, idle_s=3)
    assert (again.read, again.replayed) == (0, 0)

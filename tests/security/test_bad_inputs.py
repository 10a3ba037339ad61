"""Inputs that once got a 500: each is a 422 in the error shape now."""

from __future__ import annotations

import base64
import json

import aiohttp

from tests.realtime.test_delivery import send
from tests.support.client import Api
from tests.support.system import RunningSystem


def _cursor(data: object) -> str:
    # json, not orjson: the point is integers past 64 bits, which orjson refuses to write.
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def _assert_422(reply, code: str) -> None:  # type: ignore[no-untyped-def]
    assert reply.status == 422, reply
    assert reply.error_code() == code, reply
    assert set(reply.body["error"]) == {"code", "message", "details"}


async def test_a_huge_sync_cursor_is_422(system: RunningSystem, http: aiohttp.ClientSession):
    api = Api(http, system.gateway_url)
    user = await api.new_user("bad")
    for seq in (10**30, 2**63, 2**53 + 1):
        cursor = _cursor({"s": {user.id: seq}})
        reply = await api.call("GET", "/v1/sync", token=user.token, params={"cursor": cursor})
        await _assert_422(reply, "invalid_cursor")


async def test_a_history_cursor_past_the_year_9999_is_422(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    api = Api(http, system.gateway_url)
    ada, bob = await api.new_user("bad"), await api.new_user("bad")
    await send(api, ada, to_user_id=bob.id, content="hi")
    low, high = sorted((ada.id, bob.id))
    for millis in (999_999_999_999_999, 253_402_300_800_000):
        cursor = _cursor({"c": f"d:{low}:{high}", "p": f"{millis:015d}:x"})
        for direction in ("before", "after"):
            reply = await api.call(
                "GET",
                "/v1/messages",
                token=ada.token,
                params={"with_user": bob.id, direction: cursor},
            )
            await _assert_422(reply, "invalid_cursor")


async def test_dates_that_overflow_in_utc_are_422(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    api = Api(http, system.gateway_url)
    ada, bob = await api.new_user("bad"), await api.new_user("bad")
    for name, value in (
        ("until", "9999-12-31T23:59:59-23:59"),
        ("since", "9999-12-31T23:59:59-23:59"),
        ("since", "0001-01-01T00:00:00+23:59"),
    ):
        reply = await api.call(
            "GET", "/v1/messages", token=ada.token, params={"with_user": bob.id, name: value}
        )
        await _assert_422(reply, "invalid_query")

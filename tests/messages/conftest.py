"""Fixtures and helpers for the messaging tests (issue 5)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest

from tests.support.client import Api, Reply, User

T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fault: kills processes (SIGKILL) mid-stream; slow, still part of make test"
    )


@pytest.fixture
def api(http: aiohttp.ClientSession, gateway_url: str) -> Api:
    return Api(http, gateway_url)


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, timeout_s: float = 20.0
) -> T:
    """Poll `probe` until `done(result)`, up to `timeout_s`; return the last result."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if done(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.2)


async def send(
    api: Api,
    sender: User,
    *,
    to_user: str | None = None,
    to_group: str | None = None,
    content: str = "hello",
    client_msg_id: str | None = None,
    **extra: Any,
) -> Reply:
    body: dict[str, Any] = {"content": content, **extra}
    if to_user is not None:
        body["to_user_id"] = to_user
    if to_group is not None:
        body["to_group_id"] = to_group
    if client_msg_id is not None:
        body["client_msg_id"] = client_msg_id
    return await api.call("POST", "/v1/messages", json=body, token=sender.token)


async def send_ok(api: Api, sender: User, **kw: Any) -> dict[str, Any]:
    """Send with a client_msg_id, retrying 503/504 with the same id (as a client does)."""
    kw.setdefault("client_msg_id", str(uuid.uuid4()))
    deadline = time.monotonic() + 90
    while True:
        try:
            reply = await send(api, sender, **kw)
        except (aiohttp.ClientError, TimeoutError):
            reply = None
        if reply is not None and reply.status == 201:
            return reply.body
        if reply is not None and reply.status not in (503, 504):
            raise AssertionError(f"unexpected answer {reply}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no 201 within 90 s: {reply}")
        await asyncio.sleep(0.3)


async def history(api: Api, user: User, **params: Any) -> Reply:
    clean = {k: v for k, v in params.items() if v is not None}
    return await api.call("GET", "/v1/messages", token=user.token, params=clean)


async def all_history(api: Api, user: User, page_size: int = 100, **params: Any) -> list[dict]:
    """Walk every page backwards with `before` cursors; return messages newest first."""
    messages: list[dict] = []
    cursor = None
    while True:
        reply = await history(api, user, limit=page_size, before=cursor, **params)
        assert reply.status == 200, reply
        messages += reply.body["messages"]
        if not reply.body["has_more"]:
            return messages
        cursor = reply.body["next_cursor"]


async def create_group(api: Api, owner: User, members: list[User]) -> str:
    reply = await api.call(
        "POST",
        "/v1/groups",
        token=owner.token,
        json={"name": "g-" + uuid.uuid4().hex[:6], "member_ids": [m.id for m in members]},
    )
    assert reply.status == 201, reply
    return reply.body["id"]

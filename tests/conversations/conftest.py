"""Helpers for the conversation tests (issue 16): the inbox, edits, deletes,
reactions and replies, driven through the real gateway like a client does."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import pytest

from tests.support.client import Api, Reply, User

T = TypeVar("T")


@pytest.fixture
def api(http: aiohttp.ClientSession, gateway_url: str) -> Api:
    return Api(http, gateway_url)


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, timeout_s: float = 20.0
) -> T:
    """Poll `probe` until `done(result)`; fail with the last result after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s; last: {result!r}")
        await asyncio.sleep(0.1)


async def send(api: Api, sender: User, **body: Any) -> dict[str, Any]:
    body.setdefault("client_msg_id", str(uuid.uuid4()))
    reply = await api.call("POST", "/v1/messages", token=sender.token, json=body)
    assert reply.status == 201, reply
    return reply.body


async def make_group(api: Api, owner: User, *members: User) -> str:
    reply = await api.call(
        "POST",
        "/v1/groups",
        token=owner.token,
        json={"name": "g-" + uuid.uuid4().hex[:6], "member_ids": [m.id for m in members]},
    )
    assert reply.status == 201, reply
    return reply.body["id"]


async def block(api: Api, blocker: User, blocked: User) -> None:
    reply = await api.call("PUT", f"/v1/blocks/{blocked.id}", token=blocker.token)
    assert reply.status == 204, reply


async def conversations(api: Api, user: User, **params: Any) -> list[dict[str, Any]]:
    reply = await api.call("GET", "/v1/conversations", token=user.token, params=params)
    assert reply.status == 200, reply
    return reply.body["conversations"]


def entry(items: list[dict[str, Any]], kind: str, target: str) -> dict[str, Any] | None:
    return next((c for c in items if c["kind"] == kind and c["id"] == target), None)


async def history(api: Api, user: User, **params: Any) -> list[dict[str, Any]]:
    reply = await api.call("GET", "/v1/messages", token=user.token, params=params)
    assert reply.status == 200, reply
    return reply.body["messages"]


async def edit(api: Api, user: User, message_id: str, content: str) -> Reply:
    return await api.call(
        "PATCH", f"/v1/messages/{message_id}", token=user.token, json={"content": content}
    )


async def delete(api: Api, user: User, message_id: str) -> Reply:
    return await api.call("DELETE", f"/v1/messages/{message_id}", token=user.token)


async def react(api: Api, user: User, message_id: str, emoji: str, *, add: bool = True) -> Reply:
    return await api.call(
        "PUT" if add else "DELETE",
        f"/v1/messages/{message_id}/reactions/{quote(emoji, safe='')}",
        token=user.token,
    )


async def sync_all(api: Api, user: User, cursor: str | None = None) -> tuple[dict, str]:
    """Every page of /v1/sync after `cursor`: {"messages", "events"} and the last cursor."""
    messages: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    while True:
        params = {"cursor": cursor} if cursor else {}
        reply = await api.call("GET", "/v1/sync", token=user.token, params=params)
        assert reply.status == 200, reply
        messages += reply.body["messages"]
        events += reply.body["events"]
        cursor = reply.body["cursor"]
        if not reply.body["has_more"]:
            return {"messages": messages, "events": events}, cursor

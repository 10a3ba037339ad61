"""A WebSocket client for the real-time tests: what a real app does with /v1/ws.

`Socket` keeps every frame it receives and lets a test wait for a frame that
matches a predicate (polling with a deadline, never a fixed sleep).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

Frame = dict[str, Any]


@dataclass
class Socket:
    ws: aiohttp.ClientWebSocketResponse
    frames: list[Frame] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.frames.append(msg.json())
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()

    async def send(self, frame: Frame) -> None:
        await self.ws.send_json(frame)

    async def wait_for(self, match: Callable[[Frame], bool], timeout: float = 20.0) -> Frame:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for frame in self.frames:
                if match(frame):
                    return frame
            if self.closed.is_set():
                raise AssertionError(f"socket closed ({self.close_code}) before the frame came")
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching frame within {timeout}s; got {self.frames[-10:]}")

    def messages(self) -> list[Frame]:
        return [f["message"] for f in self.frames if f.get("type") == "message"]

    async def wait_messages(self, ids: set[str], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ids <= {m["id"] for m in self.messages()}:
                return
            await asyncio.sleep(0.05)
        missing = ids - {m["id"] for m in self.messages()}
        raise AssertionError(f"{len(missing)} of {len(ids)} messages never arrived")

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await self.reader


async def connect(
    http: aiohttp.ClientSession,
    base_url: str,
    token: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> Socket:
    """Open /v1/ws, wait for the server's hello, and start reading frames."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    ws = await http.ws_connect(
        base_url.rstrip("/") + "/v1/ws", headers=all_headers, params=params, heartbeat=None
    )
    socket = Socket(ws)
    socket.reader = asyncio.create_task(socket._read())
    await socket.wait_for(lambda f: f.get("type") == "hello")
    return socket

"""A client that stops reading is closed with 4008 ("slow consumer") once its
bounded send queue is full, and nobody else is held up by it.

The slow client is a raw TCP socket with a tiny receive buffer that completes
the WebSocket handshake and then never reads, against a gateway instance whose
send queue holds 4 frames (GATEWAY_WS_SEND_QUEUE_FRAMES)."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import struct

import aiohttp

from tests.realtime.test_delivery import eventually, send
from tests.realtime.wsclient import connect
from tests.support.client import Api
from tests.support.system import RunningSystem, ServiceProcess, free_port

FRAMES = 160


def slow_gateway(system: RunningSystem) -> ServiceProcess:
    for proc in system.extra_gateways:
        if proc.instance == "-slow":
            return proc
    env = {
        **system.env,
        "GATEWAY_INSTANCE_ID": f"{system.namespace}-gw-slow",
        "GATEWAY_WS_SEND_QUEUE_FRAMES": "4",
    }
    proc = ServiceProcess("gateway", env, free_port(), system.log_dir, instance="-slow")
    proc.start()
    system.extra_gateways.append(proc)  # stopped with the system
    proc.wait_ready()
    return proc


async def open_unread_socket(port: int, token: str) -> socket.socket:
    """Handshake by hand on a socket with a tiny receive window, then stop reading."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    raw.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(raw, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    )
    await loop.sock_sendall(raw, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(raw, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return raw


async def close_code_of(raw: socket.socket, timeout: float = 30.0) -> int:
    """Read server frames until the close frame; its status code."""
    loop = asyncio.get_running_loop()
    buffer = b""

    async def need(n: int) -> None:
        nonlocal buffer
        while len(buffer) < n:
            chunk = await asyncio.wait_for(loop.sock_recv(raw, 65536), timeout)
            if not chunk:
                raise AssertionError("connection ended without a close frame")
            buffer += chunk

    while True:
        await need(2)
        opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
        offset = 2
        if length == 126:
            await need(4)
            (length,) = struct.unpack("!H", buffer[2:4])
            offset = 4
        elif length == 127:
            await need(10)
            (length,) = struct.unpack("!Q", buffer[2:10])
            offset = 10
        await need(offset + length)
        body, buffer = buffer[offset : offset + length], buffer[offset + length :]
        if opcode == 0x8:
            return int(struct.unpack("!H", body[:2])[0])


async def test_a_client_that_stops_reading_is_closed_with_4008(
    system: RunningSystem, http: aiohttp.ClientSession
) -> None:
    api = Api(http, system.gateway_url)
    gateway = slow_gateway(system)
    ada, bob = await api.new_user("ada"), await api.new_user("bob")
    stalled = await open_unread_socket(gateway.port, bob.token)
    healthy = await connect(http, system.gateway_url, bob.token)
    try:
        # ~16 KB frames (4-byte characters): the socket's bounded kernel buffer
        # (GATEWAY_WS_SOCKET_SEND_BUFFER_BYTES) and the transport's absorb a few
        # hundred KB before the gateway's writer blocks and the 4-frame queue fills.
        sent: list[dict[str, object]] = []
        for start in range(0, FRAMES, 16):
            sent += await asyncio.gather(
                *(
                    send(api, ada, to_user_id=bob.id, content=f"{i} " + "\U0001f600" * 3990)
                    for i in range(start, start + 16)
                )
            )

        async def slow_closed() -> bool:
            async with http.get(gateway.metrics_url) as response:
                text = await response.text()
            found = re.search(r"^messenger_ws_slow_consumers_total (\S+)$", text, re.M)
            return bool(found) and float(found.group(1)) >= 1

        await eventually(slow_closed, timeout=30)
        assert await close_code_of(stalled) == 4008
        # The other device of the same user got everything meanwhile.
        await healthy.wait_messages({m["id"] for m in sent})
    finally:
        stalled.close()
        await healthy.close()

"""Protocol edges of the gateway: slow clients, oversized request lines, wrong methods.

Each answer is in the error shape ({"error": {code, message, details}}), and a
client that trickles its headers or its body is cut off instead of holding a
connection (and a handler) open forever.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlparse

import orjson
import pytest

from tests.support.system import RunningSystem, ServiceProcess

HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def strict_gateway(system: RunningSystem) -> ServiceProcess:
    """A gateway with short header and body deadlines, so a slow client is seen to be cut."""
    return system.add_gateway(
        "strict",
        {
            "HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
            "GATEWAY_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        },
    )


async def _raw_exchange(
    url: str, chunks: list[bytes], pause_s: float
) -> tuple[bytes, float, float | None]:
    """Send `chunks` with `pause_s` between them, stopping once the server answers or
    closes. Returns what came back, when the server closed the connection and when
    the first byte of its answer came (seconds after connecting; None if none came)."""
    parsed = urlparse(url)
    started = time.monotonic()
    first_byte_after: float | None = None
    reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
    received = b""
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(65536), pause_s)
            except TimeoutError:
                continue
            if data and first_byte_after is None:
                first_byte_after = time.monotonic() - started
            received += data
            break
        # Whatever comes back until the server closes (bounded by the test's own timeout).
        while True:
            data = await asyncio.wait_for(reader.read(65536), 30)
            if not data:
                break
            received += data
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        writer.close()
    return received, time.monotonic() - started, first_byte_after


def _status_and_body(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, orjson.loads(body)


async def test_a_client_trickling_its_headers_is_disconnected(strict_gateway) -> None:
    # One header byte every second, forever (60 s of them): a slowloris client.
    trickle = [b"GET /healthz HTTP/1.1\r\nHost: x\r\n"] + [b"X"] * 60
    received, closed_after, _ = await _raw_exchange(strict_gateway.url, trickle, 1.0)
    assert received == b""
    # Cut at the header deadline, long before the 60 s the client would have taken.
    assert closed_after < HEADER_TIMEOUT_S + 5


async def test_a_client_trickling_its_body_gets_408_in_the_error_shape(
    strict_gateway,
) -> None:
    head = (
        b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 60\r\n\r\n"
    )
    # A body byte every second for 30 s: the answer comes at the deadline, not at the end.
    received, _, answered_after = await _raw_exchange(strict_gateway.url, [head] + [b" "] * 30, 1.0)
    status, body = _status_and_body(received)
    assert status == 408
    assert body["error"]["code"] == "body_timeout"
    assert answered_after is not None
    assert answered_after < BODY_TIMEOUT_S + 5


async def test_a_complete_request_on_the_strict_gateway_is_served(strict_gateway, http) -> None:
    async with http.get(strict_gateway.url + "/healthz") as response:
        assert response.status == 200


async def test_405_carries_allow_and_the_error_shape(gateway_url, http) -> None:
    async with http.put(gateway_url + "/v1/users", json={}) as response:
        assert response.status == 405
        allowed = {m.strip() for m in response.headers["Allow"].split(",")}
        assert "POST" in allowed
        body = await response.json()
    assert body["error"]["code"] == "method_not_allowed"
    assert set(body["error"]) == {"code", "message", "details"}


async def test_a_header_over_8_kb_is_answered_in_the_error_shape(gateway_url) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    received, _, _ = await _raw_exchange(gateway_url, [request], 5.0)
    status, body = _status_and_body(received)
    assert status == 400
    assert body["error"]["code"] == "line_too_long"


async def test_a_url_over_the_limit_is_answered_in_the_error_shape(gateway_url) -> None:
    request = b"GET /v1/users/" + b"a" * 80_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    received, _, _ = await _raw_exchange(gateway_url, [request], 5.0)
    status, body = _status_and_body(received)
    assert status == 400
    assert body["error"]["code"] == "line_too_long"
    assert set(body["error"]) == {"code", "message", "details"}

"""A service process: readiness, graceful shutdown, and one-line errors for bad configuration."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.support.system import ROOT, free_port, http_status

SERVICE = "persister"  # any service: they share the lifecycle
NAMESPACE = "lifecycle"


@pytest.fixture(scope="module")
def topics(infra: None) -> None:
    """The namespace's topics, as a deployment's bootstrap makes them."""
    env = {**os.environ, "MESSENGER_NAMESPACE": NAMESPACE, "KAFKA_PARTITIONS": "2"}
    subprocess.run(
        [sys.executable, "-m", "libs.bootstrap"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


def run_service(
    env_extra: dict[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESSENGER_NAMESPACE": NAMESPACE, **env_extra}
    return subprocess.run(
        [sys.executable, "-m", SERVICE],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 2, no traceback, and exactly one plain (non-log) line that says what is wrong.

    Structured log lines at info level may precede it (e.g. storage bootstrapped
    before Kafka was tried); error-level noise may not.
    """
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    plain = [line for line in lines if not line.startswith("{")]
    assert len(plain) == 1, result.stderr
    noisy = [line for line in lines if line.startswith("{") and '"level":"info"' not in line]
    assert not noisy, noisy
    for fragment in fragments:
        assert fragment in plain[0], plain[0]


def test_malformed_mongo_shards_is_one_line() -> None:
    result = run_service({"MONGO_SHARDS": "localhost:27017"})
    assert_one_clear_line(result, "MONGO_SHARDS", "not a MongoDB URI")


def test_unreachable_kafka_is_one_line(infra: None) -> None:
    result = run_service(
        {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "KAFKA_CONNECT_TIMEOUT_S": "2",
            "PERSISTER_HTTP_PORT": "0",
        }
    )
    assert_one_clear_line(result, "Kafka", "unreachable")


def test_port_in_use_is_one_line(topics: None) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_service({"PERSISTER_HTTP_PORT": str(port)})
    assert_one_clear_line(result, f"127.0.0.1:{port}")


def test_ready_then_graceful_shutdown_on_sigterm(topics: None, tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    log = tmp_path / "service.log"
    env = {**os.environ, "MESSENGER_NAMESPACE": NAMESPACE, "PERSISTER_HTTP_PORT": str(port)}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", SERVICE], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while http_status(f"http://127.0.0.1:{port}/readyz") != 200:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert http_status(f"http://127.0.0.1:{port}/healthz") == 200
        assert http_status(f"http://127.0.0.1:{port}/metrics") == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert '"msg": "service stopping"' in text.replace('":"', '": "')
    assert '"msg": "service stopped"' in text.replace('":"', '": "')
    assert "Traceback" not in text


async def test_a_burst_past_the_redis_pool_waits_for_a_connection(infra: None) -> None:
    """400 commands each holding a connection for 0.3 s, through a pool of 200: the
    pool makes the later ones wait instead of failing with MaxConnectionsError."""
    import asyncio
    import secrets

    from aiohttp import web

    from libs.lifecycle import READINESS, redis_context
    from tests.support import endpoints

    key: web.AppKey = web.AppKey("redis_under_test")
    app = web.Application()
    app[READINESS] = {}
    context = redis_context(key, endpoints.redis_url())
    iterator = context(app).__aiter__()
    await iterator.__anext__()
    try:
        client = app[key]
        empty_list = "burst:" + secrets.token_hex(4)
        waits = (client.blpop([empty_list], timeout=0.3) for _ in range(400))
        answers = await asyncio.gather(*waits)
        assert answers == [None] * 400
    finally:
        with pytest.raises(StopAsyncIteration):
            await iterator.__anext__()

"""A service process: readiness, graceful shutdown, and one-line errors for bad configuration."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from tests.support.system import ROOT, free_port, http_status

SERVICE = "persister"  # any service: they share the lifecycle


def run_service(
    env_extra: dict[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESSENGER_NAMESPACE": "lifecycle", **env_extra}
    return subprocess.run(
        [sys.executable, "-m", SERVICE],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


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


def test_port_in_use_is_one_line(infra: None) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_service({"PERSISTER_HTTP_PORT": str(port)})
    assert_one_clear_line(result, f"127.0.0.1:{port}")


def test_ready_then_graceful_shutdown_on_sigterm(infra: None, tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    log = tmp_path / "service.log"
    env = {**os.environ, "MESSENGER_NAMESPACE": "lifecycle", "PERSISTER_HTTP_PORT": str(port)}
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

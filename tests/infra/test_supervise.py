"""`make run`'s supervisor: a crashed service comes back, the others keep serving.

Runs the real Procfile's services under `python -m deploy.local.supervise`, in
a namespace and on ports of their own, then kill -9s one of them.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from deploy.local.supervise import BACKOFF_FIRST_S, BACKOFF_MAX_S, next_backoff, parse_procfile
from tests.support.system import PORT_ENV, ROOT, free_port, http_status


def test_procfile_entries_are_parsed_and_bad_lines_refused() -> None:
    entries = parse_procfile("# services\n\nweb: python -m gateway --x 'a b'\n")
    assert entries == {"web": ["python", "-m", "gateway", "--x", "a b"]}
    with pytest.raises(ValueError, match="line 1"):
        parse_procfile("no colon here")


def test_backoff_doubles_while_crashing_and_resets_after_a_stable_run() -> None:
    waits = []
    wait = None
    for _ in range(10):
        wait = next_backoff(wait, ran_for_s=1.0)
        waits.append(wait)
    assert waits[:4] == [BACKOFF_FIRST_S, 1.0, 2.0, 4.0]
    assert waits[-1] == BACKOFF_MAX_S
    assert next_backoff(BACKOFF_MAX_S, ran_for_s=60.0) == BACKOFF_FIRST_S


def _wait_for(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def supervised(infra: None, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict]]:
    namespace = "t" + secrets.token_hex(5)
    ports = {name: free_port() for name in PORT_ENV}
    env = {
        **os.environ,
        "MESSENGER_NAMESPACE": namespace,
        "KAFKA_PARTITIONS": "2",
        **{PORT_ENV[name]: str(port) for name, port in ports.items()},
    }
    subprocess.run(
        [sys.executable, "-m", "libs.bootstrap"], cwd=ROOT, env=env, check=True, timeout=120
    )
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        "".join(f"{name}: {sys.executable} -m {name}\n" for name in PORT_ENV), encoding="utf-8"
    )
    log = (tmp_path / "supervise.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.local.supervise", "--procfile", str(procfile)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc, {"ports": ports, "log": tmp_path / "supervise.log"}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        log.close()


def test_a_killed_service_restarts_and_the_others_keep_serving(supervised) -> None:
    proc, info = supervised
    ports = info["ports"]
    for name, port in ports.items():
        _wait_for(
            lambda port=port: http_status(f"http://127.0.0.1:{port}/readyz") == 200,
            90,
            f"{name} ready",
        )
    victim_port = ports["message_service"]
    pids = subprocess.run(
        ["pgrep", "-P", str(proc.pid), "-f", "python.* -m message_service$"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert len(pids) == 1, pids
    os.kill(int(pids[0]), signal.SIGKILL)

    # The others keep serving while it is down and while it comes back.
    _wait_for(
        lambda: http_status(f"http://127.0.0.1:{victim_port}/healthz") is None, 10, "victim down"
    )
    assert http_status(f"http://127.0.0.1:{ports['gateway']}/readyz") == 200
    assert proc.poll() is None, "the supervisor must not stop because one service died"
    _wait_for(
        lambda: http_status(f"http://127.0.0.1:{victim_port}/readyz") == 200, 90, "victim back"
    )
    assert http_status(f"http://127.0.0.1:{ports['user_service']}/readyz") == 200

    log_text = info["log"].read_text(errors="replace")
    restarts = [
        orjson.loads(line)
        for line in log_text.splitlines()
        if line.startswith("{") and "restarting" in line
    ]
    assert len(restarts) == 1, log_text[-3000:]
    assert restarts[0]["service_name"] == "message_service"
    assert restarts[0]["exit_code"] == -signal.SIGKILL

    # SIGTERM stops every service through its graceful path, and the supervisor exits 0.
    children = subprocess.run(
        ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert len(children) == len(ports)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    for pid in children:
        _wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 10, f"pid {pid} gone")

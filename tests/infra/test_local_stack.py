"""Tests of the local launcher (deploy/local) against the real processes it starts.

The shared stack (default ports, .local/) is brought up once and left running;
tests that start, conflict or stop use a stack of their own in a temporary
state directory on free ports, so they never disturb the shared one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # deploy/ is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

import redis  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from deploy.local import Endpoints, ensure_running  # noqa: E402
from deploy.local.processes import is_alive  # noqa: E402
from deploy.local.stack import kafka_topic_partitions  # noqa: E402
from libs.contracts.topics import all_topics, namespaced  # noqa: E402
from libs.settings import ServiceSettings, load_settings  # noqa: E402

PORT_VARIABLES = (
    "LOCAL_REDIS_PORT",
    "LOCAL_KAFKA_PORT",
    "LOCAL_KAFKA_CONTROLLER_PORT",
    "LOCAL_POSTGRES_PORT",
    "LOCAL_FERRETDB_SHARD0_PORT",
    "LOCAL_FERRETDB_SHARD1_PORT",
    "LOCAL_S3_PORT",
)


@pytest.fixture(scope="module")
def stack() -> Endpoints:
    return ensure_running()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.local", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def private_env() -> Iterator[dict[str, str]]:
    """Environment of a second, private stack: its own state directory and free ports.

    The directory is one the `postgres` user can enter (pytest's tmp_path is not)."""
    state = Path(tempfile.mkdtemp(prefix="messenger-stack-"))
    state.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "LOCAL_PORT_OFFSET"}
    env["LOCAL_STACK_DIR"] = str(state / "stack")
    env.update({name: str(_free_port()) for name in PORT_VARIABLES})
    yield env
    _cli("down", env=env)  # whatever a failing test left running
    shutil.rmtree(state, ignore_errors=True)


def _mongo(uri: str) -> MongoClient[dict[str, object]]:
    return MongoClient(uri, directConnection=True, serverSelectionTimeoutMS=5000)


def test_redis_answers_ping(stack: Endpoints) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    try:
        assert client.ping() is True
    finally:
        client.close()


async def test_kafka_has_domain_topics_with_configured_partitions(stack: Endpoints) -> None:
    settings = load_settings(ServiceSettings)
    partitions = await kafka_topic_partitions(stack.kafka_bootstrap)
    expected = {namespaced(t, settings.namespace) for t in all_topics()}
    assert expected <= partitions.keys(), f"missing: {sorted(expected - partitions.keys())}"
    assert {partitions[t] for t in expected} == {settings.kafka_partitions}


def test_ferretdb_shards_answer_and_are_distinct(stack: Endpoints) -> None:
    assert len(stack.mongo_shards) == 2
    shard0, shard1 = (_mongo(uri) for uri in stack.mongo_shards)
    database = f"launcher_test_{uuid.uuid4().hex[:12]}"
    marker = {"_id": uuid.uuid4().hex, "written_to": "shard0"}
    try:
        assert shard0.admin.command("ping")["ok"] == 1.0
        assert shard1.admin.command("ping")["ok"] == 1.0
        shard0[database]["probe"].insert_one(marker)
        assert shard0[database]["probe"].find_one({"_id": marker["_id"]}) == marker
        assert shard1[database]["probe"].find_one({"_id": marker["_id"]}) is None
    finally:
        shard0.drop_database(database)
        shard0.close()
        shard1.close()


def test_status_reports_every_component_running(stack: Endpoints) -> None:
    done = _cli("status")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [
        "redis",
        "kafka",
        "postgres",
        "ferretdb-shard0",
        "ferretdb-shard1",
        "s3proxy",
    ]
    assert all(line.split()[1] == "running" for line in lines), done.stdout
    pids = {line.split()[4] for line in lines}
    assert len(pids) == 6, "each component is a process of its own"


def test_the_attachment_store_keeps_what_it_is_given(stack: Endpoints) -> None:
    import botocore.session
    from botocore.config import Config

    from deploy.local.stack import LOCAL_S3_ACCESS_KEY, LOCAL_S3_SECRET_KEY

    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        aws_access_key_id=LOCAL_S3_ACCESS_KEY,
        aws_secret_access_key=LOCAL_S3_SECRET_KEY,
        region_name="us-east-1",
        # As libs/media/store.py: S3Proxy refuses botocore's default trailing checksums.
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
    bucket = "stack-test-" + os.urandom(4).hex()
    try:
        client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key="k", Body=b"kept")
        assert client.get_object(Bucket=bucket, Key="k", Range="bytes=1-2")["Body"].read() == b"ep"
        client.delete_object(Bucket=bucket, Key="k")
        client.delete_bucket(Bucket=bucket)
    finally:
        client.close()


def test_port_taken_by_another_process_is_one_clear_line(private_env: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        private_env["LOCAL_KAFKA_PORT"] = str(busy)
        done = _cli("up", env=private_env)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"error: port {busy} is in use by another process")
    assert "LOCAL_KAFKA_PORT" in done.stderr
    run_dir = Path(private_env["LOCAL_STACK_DIR"]) / "run"
    assert not list(run_dir.glob("*.pid")), "a conflict must start nothing"


def test_private_stack_up_is_idempotent_and_down_leaves_nothing(
    private_env: dict[str, str],
) -> None:
    components = ("redis", "ferretdb-shard1")
    first = _cli("up", *components, env=private_env)
    assert first.returncode == 0, first.stdout + first.stderr
    run_dir = Path(private_env["LOCAL_STACK_DIR"]) / "run"
    # A FerretDB shard brings the PostgreSQL server it stores into.
    started = (*components, "postgres")
    pids = {name: int((run_dir / f"{name}.pid").read_text().split()[0]) for name in started}
    assert all(is_alive(pid) for pid in pids.values())

    again = _cli("up", *components, env=private_env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already running") == 3
    assert {name: int((run_dir / f"{name}.pid").read_text().split()[0]) for name in started} == pids

    client = redis.Redis(port=int(private_env["LOCAL_REDIS_PORT"]))
    try:
        assert client.ping() is True
    finally:
        client.close()

    stopped = _cli("down", env=private_env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not any(is_alive(pid) for pid in pids.values())
    assert not list(run_dir.glob("*.pid"))

    after = _cli("status", *components, env=private_env)
    assert after.returncode == 3
    assert [line.split()[1] for line in after.stdout.splitlines()] == ["stopped"] * 3


def test_redis_keeps_its_data_across_a_crash(private_env: dict[str, str]) -> None:
    """Sessions live in Redis: a kill -9 of the local Redis must not log everyone out."""
    first = _cli("up", "redis", env=private_env)
    assert first.returncode == 0, first.stdout + first.stderr
    run_dir = Path(private_env["LOCAL_STACK_DIR"]) / "run"
    port = int(private_env["LOCAL_REDIS_PORT"])
    client = redis.Redis(port=port)
    try:
        client.set("session:probe", "kept")
        pid = int((run_dir / "redis.pid").read_text().split()[0])
        os.kill(pid, 9)
        again = _cli("up", "redis", env=private_env)
        assert again.returncode == 0, again.stdout + again.stderr
        client = redis.Redis(port=port)
        assert client.get("session:probe") == b"kept"
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    finally:
        client.close()
        _cli("down", env=private_env)

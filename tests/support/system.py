"""The system under test: the seven services as real processes in their own namespace.

`RunningSystem.start()` bootstraps the namespace's topics and starts every service
with `python -m <service>` on free ports, waiting for each /readyz. Each test
session gets a fresh MESSENGER_NAMESPACE, so its topics, consumer groups, Redis
keys and databases are its own. `ServiceProcess` can SIGKILL and restart one
process, for fault tests; `add_gateway()` starts a second gateway instance.
`discard()`, after `stop()`, deletes the namespace's topics and databases, so
test sessions do not pile up thousands of partitions in the local broker (which
slows its every restart) or databases in the shards.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = (
    "user_service",
    "group_service",
    "message_service",
    "delivery_service",
    "persister",
    "notifier",
    "gateway",
)
PORT_ENV = {
    "gateway": "GATEWAY_HTTP_PORT",
    "user_service": "USER_SERVICE_HTTP_PORT",
    "group_service": "GROUP_SERVICE_HTTP_PORT",
    "message_service": "MESSAGE_SERVICE_HTTP_PORT",
    "delivery_service": "DELIVERY_SERVICE_HTTP_PORT",
    "persister": "PERSISTER_HTTP_PORT",
    "notifier": "NOTIFIER_HTTP_PORT",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


@dataclass
class ServiceProcess:
    """One service process: start, wait ready, SIGKILL, SIGTERM, restart."""

    name: str
    env: dict[str, str]
    port: int
    log_dir: Path
    instance: str = ""
    process: subprocess.Popen[bytes] | None = None
    #: The gateway serves /metrics on a port of its own (never on the public API port).
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        if self.name == "gateway" and self.metrics_port is None:
            self.metrics_port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """Where this process's /metrics is."""
        return f"http://127.0.0.1:{self.metrics_port or self.port}/metrics"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}{self.instance}.log"

    def start(self) -> None:
        env = {**self.env, PORT_ENV[self.name]: str(self.port)}
        if self.metrics_port is not None:
            env["GATEWAY_METRICS_PORT"] = str(self.metrics_port)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.name],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}; "
                    f"last log lines:\n{self.tail()}"
                )
            if http_status(self.url + "/readyz") == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s; log:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no commit (a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful path. Returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise
        return int(self.process.returncode)

    def restart(self) -> None:
        self.kill()
        self.start()
        self.wait_ready()


@dataclass
class RunningSystem:
    namespace: str
    env: dict[str, str]
    log_dir: Path
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    extra_gateways: list[ServiceProcess] = field(default_factory=list)

    @property
    def gateway_url(self) -> str:
        return self.services["gateway"].url

    @classmethod
    def start(
        cls, namespace: str, *, log_dir: Path, extra_env: dict[str, str] | None = None
    ) -> RunningSystem:
        env = {
            **os.environ,
            "MESSENGER_NAMESPACE": namespace,
            "KAFKA_PARTITIONS": "4",
            "LOG_LEVEL": "INFO",
            **(extra_env or {}),
        }
        log_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "libs.bootstrap"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        system = cls(namespace=namespace, env=env, log_dir=log_dir)
        for name in SERVICES:
            if not (ROOT / name / "__main__.py").exists():
                raise RuntimeError(f"service {name} has no __main__.py")
            proc = ServiceProcess(
                name, {**env, "GATEWAY_INSTANCE_ID": f"{namespace}-gw-a"}, free_port(), log_dir
            )
            system.services[name] = proc
            proc.start()
        for proc in system.services.values():
            proc.wait_ready()
        return system

    def add_gateway(
        self, label: str = "b", extra_env: dict[str, str] | None = None
    ) -> ServiceProcess:
        """Another gateway instance (its own reply topic and push channel)."""
        proc = ServiceProcess(
            "gateway",
            {
                **self.env,
                "GATEWAY_INSTANCE_ID": f"{self.namespace}-gw-{label}",
                **(extra_env or {}),
            },
            free_port(),
            self.log_dir,
            instance=f"-{label}",
        )
        proc.start()
        proc.wait_ready()
        self.extra_gateways.append(proc)
        return proc

    def stop(self) -> dict[str, int]:
        """SIGTERM everything, gateways first; return each exit code."""
        codes: dict[str, int] = {}
        for proc in [*self.extra_gateways, self.services.get("gateway")]:
            if proc is not None and proc.process is not None:
                codes[proc.name + proc.instance] = _terminate_quietly(proc)
        for name, proc in self.services.items():
            if name != "gateway" and proc.process is not None:
                codes[name] = _terminate_quietly(proc)
        return codes

    def discard(self) -> None:
        """Delete what the namespace left in Kafka and MongoDB (after `stop()`); a
        failure only leaves them behind, with a line on stderr."""
        try:
            asyncio.run(asyncio.wait_for(_discard(self.namespace), 60))
        except Exception as exc:
            print(f"namespace {self.namespace} not discarded: {exc!r}", file=sys.stderr)


async def _discard(namespace: str) -> None:
    from libs.bus.admin import delete_namespace_topics
    from libs.settings import ServiceSettings
    from libs.storage.mongo import open_shards

    settings = ServiceSettings(**{"MESSENGER_NAMESPACE": namespace})
    await delete_namespace_topics(settings.kafka_bootstrap_servers, namespace)
    shards = open_shards(settings.mongo_shards, settings.database_name)
    try:
        for client in shards.clients:
            await client.drop_database(settings.database_name)
    finally:
        await shards.close()


def _terminate_quietly(proc: ServiceProcess) -> int:
    try:
        return proc.terminate()
    except subprocess.TimeoutExpired:
        return -9

"""The local stack: Redis, a KRaft Kafka broker, PostgreSQL with two FerretDB shards on it,
and the attachment store (S3Proxy, an S3 API over a directory) as background processes.

Owns everything under the state directory (`.local/` at the repository root,
LOCAL_STACK_DIR to move it): data, logs (`logs/<component>.log`), pidfiles
(`run/<component>.pid`) and Kafka's generated server.properties. Each process
is started in a session of its own, so a Ctrl-C in the terminal that ran `up`
does not reach it; `down` signals that session.

Ports (127.0.0.1 only), each movable by its environment variable, all moved at
once by LOCAL_PORT_OFFSET:

    redis            16379         LOCAL_REDIS_PORT
    kafka            19092, 19093  LOCAL_KAFKA_PORT, LOCAL_KAFKA_CONTROLLER_PORT
    postgres         25432         LOCAL_POSTGRES_PORT
    ferretdb-shard0  27117         LOCAL_FERRETDB_SHARD0_PORT
    ferretdb-shard1  27118         LOCAL_FERRETDB_SHARD1_PORT
    s3proxy          19000         LOCAL_S3_PORT

Each FerretDB shard stores its data in a PostgreSQL database of its own
(`shard0`, `shard1`) on the one PostgreSQL server, which runs as the `postgres`
user (PostgreSQL refuses root) with trust authentication on 127.0.0.1 only and
`plan_cache_mode=force_custom_plan`, so that FerretDB's parameterised queries are
planned with their values and can use the expression indexes the services make
(libs/storage/sqlindexes.py, docs/storage.md). Selecting a FerretDB shard
selects PostgreSQL too.

`up` is idempotent: what already runs and answers is left alone; it returns
once every component answers a real request (Redis PING, Kafka metadata through
aiokafka's admin client, MongoDB `ping`, an S3 ListBuckets) and the domain topics exist.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from deploy.local import processes

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_LIBS = REPO_ROOT / "deploy" / "kafka" / "target" / "libs"
KAFKA_LOG4J2 = REPO_ROOT / "deploy" / "kafka" / "log4j2.properties"
FERRETDB_BINARY = REPO_ROOT / "deploy" / "ferretdb" / "ferretdb-local"
S3PROXY_LIBS = REPO_ROOT / "deploy" / "s3proxy" / "target" / "libs"
S3PROXY_LOGBACK = REPO_ROOT / "deploy" / "s3proxy" / "logback.xml"
#: Credentials of the local S3 store only (it listens on 127.0.0.1); production
#: reads its own from S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY.
LOCAL_S3_ACCESS_KEY = "messenger-local"
LOCAL_S3_SECRET_KEY = "messenger-local-secret"
HOST = "127.0.0.1"

DEFAULT_PORTS: Mapping[str, int] = {
    "LOCAL_REDIS_PORT": 16379,
    "LOCAL_KAFKA_PORT": 19092,
    "LOCAL_KAFKA_CONTROLLER_PORT": 19093,
    "LOCAL_POSTGRES_PORT": 25432,
    "LOCAL_FERRETDB_SHARD0_PORT": 27117,
    "LOCAL_FERRETDB_SHARD1_PORT": 27118,
    "LOCAL_S3_PORT": 19000,
}
DEFAULT_TIMEOUT_S = 90.0
FERRETDB_SHARDS = ("shard0", "shard1")

Report = Callable[[str], None]
T = TypeVar("T")


class StackError(Exception):
    """The stack cannot be brought to the asked state; the message is one line for a human."""


def _quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Endpoints:
    """Where clients reach the local stack, spelled as libs.settings expects them."""

    redis_url: str
    kafka_bootstrap: str
    mongo_shards: tuple[str, ...]
    s3_endpoint: str
    #: The PostgreSQL database under each FerretDB shard, in MONGO_SHARDS order.
    shard_sql_urls: tuple[str, ...] = ()

    def as_env(self) -> dict[str, str]:
        """The shared service settings (libs/settings.py, libs/media/settings.py) that
        point at this stack."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "REDIS_URL": self.redis_url,
            "MONGO_SHARDS": ",".join(self.mongo_shards),
            "MONGO_SHARDS_SQL": ",".join(self.shard_sql_urls),
            "S3_ENDPOINT_URL": self.s3_endpoint,
        }


@dataclass(frozen=True)
class StackConfig:
    """Ports and state directory of one local stack, read from the environment."""

    state_dir: Path
    ports: Mapping[str, int]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackConfig:
        env = os.environ if environ is None else environ
        offset = _env_int(env, "LOCAL_PORT_OFFSET", 0)
        ports = {name: _env_int(env, name, port + offset) for name, port in DEFAULT_PORTS.items()}
        for name, port in ports.items():
            if not 1 <= port <= 65535:
                raise StackError(f"{name}={port} is not a TCP port (1-65535)")
        if len(set(ports.values())) != len(ports):
            raise StackError(f"local stack ports must differ, got {_format_ports(ports)}")
        state_dir = Path(env.get("LOCAL_STACK_DIR") or REPO_ROOT / ".local")
        if not state_dir.is_absolute():
            state_dir = REPO_ROOT / state_dir
        return cls(state_dir=state_dir, ports=ports)

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(
            redis_url=f"redis://{HOST}:{self.ports['LOCAL_REDIS_PORT']}/0",
            kafka_bootstrap=f"{HOST}:{self.ports['LOCAL_KAFKA_PORT']}",
            mongo_shards=tuple(
                f"mongodb://{HOST}:{self.ports[_shard_port_env(s)]}/" for s in FERRETDB_SHARDS
            ),
            shard_sql_urls=tuple(self.postgres_url(s) for s in FERRETDB_SHARDS),
            s3_endpoint=f"http://{HOST}:{self.ports['LOCAL_S3_PORT']}",
        )

    def postgres_url(self, database: str) -> str:
        return f"postgresql://{POSTGRES_USER}@{HOST}:{self.ports['LOCAL_POSTGRES_PORT']}/{database}"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a number") from None


def _format_ports(ports: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in ports.items())


def _shard_port_env(shard: str) -> str:
    return f"LOCAL_FERRETDB_{shard.upper()}_PORT"


# --------------------------------------------------------------------------- components


@dataclass(frozen=True)
class Component:
    """One background process of the stack and how to start, probe and stop it."""

    name: str
    #: (port, environment variable that moves it); the first is the one clients use.
    ports: tuple[tuple[int, str], ...]
    argv: tuple[str, ...]
    #: Raises when the process does not (yet) answer a real request.
    probe: Callable[[], None]
    #: Files that `make setup` produces and this component needs.
    needs: tuple[Path, ...] = ()
    prepare: Callable[[Report], None] | None = None
    stop_timeout_s: float = 10.0
    extra_env: Mapping[str, str] = field(default_factory=dict)
    #: Components that must run for this one to answer (selected with it).
    requires: tuple[str, ...] = ()
    #: Run the process as this user when the launcher runs as root.
    user: str | None = None
    #: What `down` sends first (PostgreSQL: SIGINT, its fast shutdown; its SIGTERM
    #: waits for every client to disconnect).
    stop_signal: signal.Signals = signal.SIGTERM

    @property
    def port(self) -> int:
        return self.ports[0][0]

    @property
    def port_numbers(self) -> tuple[int, ...]:
        return tuple(p for p, _ in self.ports)


def components(config: StackConfig) -> list[Component]:
    """The stack in start order."""
    p = config.ports
    redis_dir = config.state_dir / "redis"
    kafka_dir = config.state_dir / "kafka"
    kafka_props = kafka_dir / "server.properties"
    result = [
        Component(
            name="redis",
            ports=((p["LOCAL_REDIS_PORT"], "LOCAL_REDIS_PORT"),),
            argv=(
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(p["LOCAL_REDIS_PORT"]),
                "--bind",
                HOST,
                # Sessions, projections and caches survive a restart: an append-only
                # file, written before each reply and fsynced once a second (the
                # production setting in docs/deployment.md); no RDB snapshots.
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--dir",
                str(redis_dir),
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ),
            probe=lambda: _probe_redis(p["LOCAL_REDIS_PORT"]),
            prepare=lambda _report: _require_redis(redis_dir),
        ),
        Component(
            name="kafka",
            ports=(
                (p["LOCAL_KAFKA_PORT"], "LOCAL_KAFKA_PORT"),
                (p["LOCAL_KAFKA_CONTROLLER_PORT"], "LOCAL_KAFKA_CONTROLLER_PORT"),
            ),
            argv=(
                "java",
                "-Xms256m",
                "-Xmx768m",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={KAFKA_LOG4J2}",
                "-cp",
                f"{KAFKA_LIBS}/*",
                "kafka.Kafka",
                str(kafka_props),
            ),
            probe=lambda: _probe_kafka(p["LOCAL_KAFKA_PORT"]),
            needs=(KAFKA_LIBS / "kafka_2.13-4.1.1.jar",),
            prepare=lambda report: _prepare_kafka(config, kafka_dir, kafka_props, report),
            stop_timeout_s=20.0,
        ),
    ]
    postgres_dir = config.state_dir / "postgres"
    result.append(
        Component(
            name="postgres",
            ports=((p["LOCAL_POSTGRES_PORT"], "LOCAL_POSTGRES_PORT"),),
            argv=(
                str(postgres_bin("postgres")),
                "-D",
                str(postgres_dir / "data"),
                "-p",
                str(p["LOCAL_POSTGRES_PORT"]),
                "-c",
                f"listen_addresses={HOST}",
                "-c",
                f"unix_socket_directories={postgres_dir / 'run'}",
                "-c",
                "plan_cache_mode=force_custom_plan",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=256MB",
            ),
            probe=lambda: _probe_postgres(config),
            prepare=lambda report: _prepare_postgres(postgres_dir, report),
            user=_run_as(POSTGRES_USER),
            stop_signal=signal.SIGINT,
            stop_timeout_s=30.0,
        )
    )
    for shard in FERRETDB_SHARDS:
        port = p[_shard_port_env(shard)]
        result.append(
            Component(
                name=f"ferretdb-{shard}",
                ports=((port, _shard_port_env(shard)),),
                argv=(
                    str(FERRETDB_BINARY),
                    "-listen-addr",
                    f"{HOST}:{port}",
                    "-postgresql-url",
                    config.postgres_url(shard),
                    "-log-level",
                    # At "warn" FerretDB logs every command it does not implement, such
                    # as the endSessions each pymongo client sends when it closes.
                    os.environ.get("LOCAL_FERRETDB_LOG_LEVEL", "error"),
                ),
                probe=lambda port=port: _probe_ferretdb(port),
                needs=(FERRETDB_BINARY,),
                requires=("postgres",),
            )
        )
    s3_dir = config.state_dir / "s3proxy"
    s3_props = s3_dir / "s3proxy.conf"
    result.append(
        Component(
            name="s3proxy",
            ports=((p["LOCAL_S3_PORT"], "LOCAL_S3_PORT"),),
            argv=(
                "java",
                "-Xms64m",
                "-Xmx384m",
                "-Djava.awt.headless=true",
                f"-Dlogback.configurationFile={S3PROXY_LOGBACK}",
                "-cp",
                f"{S3PROXY_LIBS}/*",
                "org.gaul.s3proxy.Main",
                "--properties",
                str(s3_props),
            ),
            probe=lambda: _probe_s3(p["LOCAL_S3_PORT"]),
            needs=(S3PROXY_LIBS / "s3proxy-2.6.0.jar",),
            prepare=lambda _report: _prepare_s3proxy(config, s3_dir, s3_props),
        )
    )
    return result


def _prepare_s3proxy(config: StackConfig, s3_dir: Path, props: Path) -> None:
    data_dir = s3_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    props.write_text(
        "\n".join(
            [
                "# Generated by deploy/local on every start; edit deploy/local/stack.py instead.",
                f"s3proxy.endpoint=http://{HOST}:{config.ports['LOCAL_S3_PORT']}",
                "s3proxy.authorization=aws-v2-or-v4",
                f"s3proxy.identity={LOCAL_S3_ACCESS_KEY}",
                f"s3proxy.credential={LOCAL_S3_SECRET_KEY}",
                "jclouds.provider=filesystem",
                f"jclouds.filesystem.basedir={data_dir}",
                "",
            ]
        )
    )


def select(config: StackConfig, names: Sequence[str] | None) -> list[Component]:
    """The named components (all when names is empty), in start order."""
    every = components(config)
    if not names:
        return every
    known = {c.name for c in every}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise StackError(f"unknown component {unknown[0]!r}; known: {', '.join(sorted(known))}")
    wanted = set(names)
    wanted |= {r for c in every if c.name in wanted for r in c.requires}
    return [c for c in every if c.name in wanted]


def _require_redis(redis_dir: Path) -> None:
    if shutil.which("redis-server") is None:
        raise StackError("redis-server is not installed; run `make setup`")
    redis_dir.mkdir(parents=True, exist_ok=True)


def _kafka_properties(config: StackConfig, data_dir: Path) -> str:
    broker = config.ports["LOCAL_KAFKA_PORT"]
    controller = config.ports["LOCAL_KAFKA_CONTROLLER_PORT"]
    return "\n".join(
        [
            "# Generated by deploy/local on every start; edit deploy/local/stack.py instead.",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{HOST}:{controller}",
            f"listeners=PLAINTEXT://{HOST}:{broker},CONTROLLER://{HOST}:{controller}",
            f"advertised.listeners=PLAINTEXT://{HOST}:{broker}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data_dir}",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "auto.create.topics.enable=false",
            "group.initial.rebalance.delay.ms=0",
            # Offset commits are answered at once, not after the group coordinator's
            # default 5 ms append linger (each consumer batch ends with a commit).
            "group.coordinator.append.linger.ms=0",
            "",
        ]
    )


def _prepare_kafka(config: StackConfig, kafka_dir: Path, props: Path, report: Report) -> None:
    data_dir = kafka_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    props.write_text(_kafka_properties(config, data_dir))
    if (data_dir / "meta.properties").exists():
        return
    # Kafka's own random-uuid: 16 random bytes, URL-safe base64 without padding, never
    # starting with "-" (it would read as a flag). Made here to spare a JVM start.
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    report(f"kafka: formatting {data_dir} (cluster id {cluster_id})")
    try:
        done = subprocess.run(
            [
                "java",
                "-cp",
                f"{KAFKA_LIBS}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(props),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise StackError("java is not installed; run `make setup`") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise StackError(f"formatting Kafka storage failed: {lines[-1]}")


POSTGRES_USER = "postgres"
#: Where Debian's packages put PostgreSQL's server binaries (one folder per major version).
POSTGRES_ROOT = Path("/usr/lib/postgresql")


def postgres_bin(tool: str) -> Path:
    """`tool` of the newest PostgreSQL installed (a placeholder path when none is)."""
    versions = sorted(
        (p for p in POSTGRES_ROOT.glob("*/bin") if (p / "postgres").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return (versions[-1] if versions else POSTGRES_ROOT / "missing" / "bin") / tool


def _run_as(user: str) -> str | None:
    return user if os.geteuid() == 0 else None


def _as_postgres_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", POSTGRES_USER, "--", *argv] if os.geteuid() == 0 else argv


def _prepare_postgres(postgres_dir: Path, report: Report) -> None:
    """Create the cluster on first use (trust auth, 127.0.0.1 only), owned by `postgres`."""
    if not postgres_bin("postgres").exists():
        raise StackError("PostgreSQL is not installed; run `make setup`")
    data = postgres_dir / "data"
    for folder in (postgres_dir, postgres_dir / "run"):
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(folder, POSTGRES_USER, POSTGRES_USER)
    if (data / "PG_VERSION").exists():
        return
    report(f"postgres: initdb {data}")
    done = subprocess.run(
        _as_postgres_user(
            [
                str(postgres_bin("initdb")),
                "-D",
                str(data),
                "-U",
                POSTGRES_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ]
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise StackError(
            f"initdb failed: {lines[-1]} (the `postgres` user must be able to enter "
            f"{postgres_dir}; move LOCAL_STACK_DIR if it cannot)"
        )


# --------------------------------------------------------------------------- probes


def run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _probe_redis(port: int) -> None:
    import redis

    client = redis.Redis(host=HOST, port=port, socket_connect_timeout=1, socket_timeout=2)
    try:
        if client.ping() is not True:
            raise RuntimeError("PING was not answered with PONG")
    finally:
        client.close()


async def kafka_topic_partitions(bootstrap: str, timeout_s: float = 5.0) -> dict[str, int]:
    """Every topic of the broker with its partition count, through aiokafka's admin client."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        topics = await asyncio.wait_for(admin.describe_topics(), timeout_s)
        return {t["topic"]: len(t["partitions"]) for t in topics}
    finally:
        await admin.close()


def _probe_kafka(port: int) -> None:
    # aiokafka retries a refused connection for a while; fail fast until the port is open.
    if not processes.accepts_connections(HOST, port):
        raise ConnectionRefusedError(f"nothing accepts connections on {HOST}:{port}")
    run_coroutine(lambda: kafka_topic_partitions(f"{HOST}:{port}"))


async def _ensure_shard_databases(config: StackConfig) -> None:
    import asyncpg

    connection = await asyncpg.connect(config.postgres_url("postgres"), timeout=2)
    try:
        present = {
            row["datname"] for row in await connection.fetch("SELECT datname FROM pg_database")
        }
        for shard in FERRETDB_SHARDS:
            if shard not in present:
                await connection.execute(f'CREATE DATABASE "{shard}"')
    finally:
        await connection.close()


def _probe_postgres(config: StackConfig) -> None:
    """Answers a query, and every shard's database exists (created here on first start)."""
    if not processes.accepts_connections(HOST, config.ports["LOCAL_POSTGRES_PORT"]):
        raise ConnectionRefusedError("PostgreSQL does not accept connections yet")
    run_coroutine(lambda: _ensure_shard_databases(config))


def _probe_ferretdb(port: int) -> None:
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(
        f"mongodb://{HOST}:{port}/",
        directConnection=True,
        serverSelectionTimeoutMS=1000,
        connectTimeoutMS=1000,
    )
    try:
        client.admin.command("ping")
    finally:
        client.close()


def _probe_s3(port: int) -> None:
    """A signed ListBuckets must be answered 200 (an unsigned one is a 403 from any S3)."""
    import botocore.session
    from botocore.config import Config

    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=f"http://{HOST}:{port}",
        aws_access_key_id=LOCAL_S3_ACCESS_KEY,
        aws_secret_access_key=LOCAL_S3_SECRET_KEY,
        region_name="us-east-1",
        config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}),
    )
    try:
        client.list_buckets()
    finally:
        client.close()


def _is_ready(component: Component) -> bool:
    try:
        component.probe()
    except Exception:
        return False
    return True


# --------------------------------------------------------------------------- lifecycle


@contextlib.contextmanager
def _locked(config: StackConfig) -> Iterator[None]:
    """Serialise up/down of one state directory (make and test fixtures may race)."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    with (config.run_dir / "launcher.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _pidfile(config: StackConfig, component: Component) -> Path:
    return config.run_dir / f"{component.name}.pid"


def _log_path(config: StackConfig, component: Component) -> Path:
    return config.logs_dir / f"{component.name}.log"


@dataclass(frozen=True)
class PortConflict:
    """A port of a component that is held by a process that is not the launcher's."""

    component: str
    port: int
    env_name: str
    #: "pid 123: <command line>", or "" when /proc does not tell.
    holder: str

    def error(self) -> StackError:
        who = f" ({self.holder})" if self.holder else ""
        return StackError(
            f"port {self.port} is in use by another process{who}; stop it or set "
            f"{self.env_name} (or LOCAL_PORT_OFFSET) to move the local {self.component}"
        )


def _port_conflict(component: Component) -> PortConflict | None:
    for port, env_name in component.ports:
        if processes.port_in_use(HOST, port):
            holder = processes.describe_port_holder(port)
            return PortConflict(component.name, port, env_name, holder)
    return None


def _spawn(config: StackConfig, component: Component) -> processes.ProcessRecord:
    log_path = _log_path(config, component)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if log_path.exists() and log_path.stat().st_size > 20 * 1024 * 1024:
        log_path.replace(log_path.with_suffix(".log.1"))
    with log_path.open("ab") as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {component.name}\n".encode())
        log.flush()
        try:
            child = subprocess.Popen(
                component.argv,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **component.extra_env},
                user=component.user,
                group=component.user,
            )
        except OSError as exc:
            raise StackError(f"cannot start {component.name}: {exc}") from None
    return processes.write_record(_pidfile(config, component), child.pid, component.port_numbers)


def _wait_ready(
    config: StackConfig,
    component: Component,
    record: processes.ProcessRecord | None,
    deadline: float,
    timeout_s: float,
) -> None:
    """Poll component's probe until it answers; fail early if its process exits."""
    log_path = _log_path(config, component)
    while True:
        if record is not None and not processes.is_alive(record.pid, record.start_time):
            _pidfile(config, component).unlink(missing_ok=True)
            tail = processes.last_line(log_path)
            raise StackError(
                f"{component.name} exited during start-up"
                + (f": {tail!r}" if tail else "")
                + f" (log: {_display(log_path)})"
            )
        if _is_ready(component):
            return
        if time.monotonic() >= deadline:
            raise StackError(
                f"{component.name} is not ready on {HOST}:{component.port} after {timeout_s:.0f} s "
                f"(log: {_display(log_path)}); `make down` and retry, or raise --timeout"
            )
        time.sleep(0.2)


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def up(
    names: Sequence[str] | None = None,
    *,
    config: StackConfig | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    report: Report = _quiet,
) -> Endpoints:
    """Start what is not running, wait until everything answers, create the domain topics."""
    config = config or StackConfig.from_env()
    selected = select(config, names)
    started_at = time.monotonic()
    deadline = started_at + timeout_s
    with _locked(config):
        missing = [p for c in selected for p in c.needs if not p.exists()]
        if missing:
            raise StackError(f"{_display(missing[0])} is missing; run `make setup` first")

        # Decide everything before starting anything: a port conflict starts nothing.
        running: dict[str, processes.ProcessRecord] = {}
        to_start: list[Component] = []
        for component in selected:
            record = processes.read_record(_pidfile(config, component))
            if record is None:
                conflict = _port_conflict(component)
                if conflict:
                    raise conflict.error()
                to_start.append(component)
            elif record.ports != component.port_numbers:
                raise StackError(
                    f"{component.name} (pid {record.pid}) runs on port(s) "
                    f"{','.join(map(str, record.ports))}, not the configured "
                    f"{','.join(map(str, component.port_numbers))}; run `make down` first"
                )
            else:
                running[component.name] = record

        for component in to_start:
            if component.prepare is not None:
                component.prepare(report)
            running[component.name] = _spawn(config, component)
            report(f"{component.name}: started (pid {running[component.name].pid})")

        for component in selected:
            _wait_ready(config, component, running[component.name], deadline, timeout_s)
            state = "ready" if component in to_start else "already running"
            report(f"{component.name}: {state} on {HOST}:{component.port}")

        if any(c.name == "kafka" for c in selected):
            created = _ensure_domain_topics(config)
            if created:
                report(f"kafka: created {len(created)} topics")
    report(f"local stack up in {time.monotonic() - started_at:.1f} s")
    return config.endpoints


def _ensure_domain_topics(config: StackConfig) -> list[str]:
    from libs.bus.admin import ensure_topics
    from libs.contracts.topics import all_topics, namespaced
    from libs.settings import ConfigurationError, ServiceSettings, load_settings

    try:
        settings = load_settings(ServiceSettings)
        topics = [namespaced(t, settings.namespace) for t in all_topics()]
        return run_coroutine(
            lambda: ensure_topics(
                config.endpoints.kafka_bootstrap,
                topics,
                settings.kafka_partitions,
                settings.kafka_replication_factor,
            )
        )
    except ConfigurationError as exc:
        raise StackError(f"creating topics failed: {exc}") from None


def down(
    names: Sequence[str] | None = None,
    *,
    config: StackConfig | None = None,
    report: Report = _quiet,
) -> None:
    """SIGTERM every running component, SIGKILL what outlives its grace period."""
    config = config or StackConfig.from_env()
    selected = select(config, names)
    with _locked(config):
        pending: dict[str, tuple[Component, processes.ProcessRecord, float]] = {}
        now = time.monotonic()
        for component in selected:
            record = processes.read_record(_pidfile(config, component))
            if record is None:
                report(f"{component.name}: not running")
                continue
            processes.signal_group(record.pid, component.stop_signal)
            pending[component.name] = (component, record, now + component.stop_timeout_s)
        killed: set[str] = set()
        while pending:
            for name, (component, record, stop_by) in list(pending.items()):
                if not processes.is_alive(record.pid, record.start_time):
                    _pidfile(config, component).unlink(missing_ok=True)
                    how = "killed" if name in killed else "stopped"
                    report(f"{name}: {how} (pid {record.pid})")
                    del pending[name]
                elif time.monotonic() >= stop_by:
                    if name in killed:
                        raise StackError(f"{name} (pid {record.pid}) survives SIGKILL")
                    report(f"{name}: no exit after {component.stop_timeout_s:.0f} s, SIGKILL")
                    processes.signal_group(record.pid, signal.SIGKILL)
                    killed.add(name)
                    pending[name] = (component, record, time.monotonic() + 5.0)
            time.sleep(0.1)


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    #: "running" (answers), "starting" (process up, no answer yet) or "stopped".
    state: str
    address: str
    pid: int | None = None
    detail: str = ""

    def line(self) -> str:
        pid = f"pid {self.pid}" if self.pid else "-"
        text = f"{self.name:<16} {self.state:<8} {self.address:<22} {pid}"
        return f"{text}  {self.detail}" if self.detail else text


def status(
    names: Sequence[str] | None = None, *, config: StackConfig | None = None
) -> list[ComponentStatus]:
    """What runs, as one ComponentStatus per component."""
    config = config or StackConfig.from_env()
    result = []
    for component in select(config, names):
        address = f"{HOST}:{component.port}"
        record = processes.read_record(_pidfile(config, component))
        if record is not None:
            state = "running" if _is_ready(component) else "starting"
            result.append(ComponentStatus(component.name, state, address, record.pid))
            continue
        conflict = _port_conflict(component)
        detail = ""
        if conflict:
            detail = f"port {conflict.port} held by {conflict.holder or 'another process'}"
        result.append(ComponentStatus(component.name, "stopped", address, None, detail))
    return result


def wait(
    names: Sequence[str] | None = None,
    *,
    config: StackConfig | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Block until every component answers; starts nothing."""
    config = config or StackConfig.from_env()
    selected = select(config, names)
    deadline = time.monotonic() + timeout_s
    while True:
        not_ready = [c.name for c in selected if not _is_ready(c)]
        if not not_ready:
            return
        if time.monotonic() >= deadline:
            raise StackError(
                f"not ready after {timeout_s:.0f} s: {', '.join(not_ready)} "
                "(see `make status`; start with `make up`)"
            )
        time.sleep(0.5)


def ensure_running(*, export_env: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S) -> Endpoints:
    """Bring the whole local stack up if it is not (the test fixtures' entry point).

    With export_env, KAFKA_BOOTSTRAP_SERVERS, REDIS_URL and MONGO_SHARDS are set in
    os.environ to this stack's endpoints unless already set, so that settings read
    afterwards (libs.settings) point at it even when LOCAL_* ports moved it.
    """
    endpoints = up(timeout_s=timeout_s)
    if export_env:
        for key, value in endpoints.as_env().items():
            os.environ.setdefault(key, value)
    return endpoints


async def ensure_running_async(*, export_env: bool = True) -> Endpoints:
    """ensure_running for async fixtures: the blocking work runs in a thread."""
    return await asyncio.to_thread(ensure_running, export_env=export_env)


def endpoints() -> Endpoints:
    """The endpoints of the local stack as configured by the environment (starts nothing)."""
    return StackConfig.from_env().endpoints


def env_lines(environ: Mapping[str, str] | None = None) -> list[str]:
    """KEY=value lines for the services (`eval` in make); set values win."""
    import shlex

    env = os.environ if environ is None else environ
    return [
        f"{key}={shlex.quote(env.get(key) or value)}"
        for key, value in StackConfig.from_env(env).endpoints.as_env().items()
    ]


def log_files(
    names: Sequence[str] | None = None, *, config: StackConfig | None = None
) -> list[Path]:
    config = config or StackConfig.from_env()
    return [_log_path(config, c) for c in select(config, names)]

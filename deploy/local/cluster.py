"""Cluster mode: the production shape of the system as local processes on one machine.

Owns the cluster's state directory (`.local/cluster/`, LOCAL_CLUSTER_DIR to move
it), its ports and its components:

    kafka-1..3   three KRaft nodes, each broker and controller (a 3-voter quorum);
                 topics with replication factor 3, min.insync.replicas 2,
                 unclean leader election off, auto-creation off
    redis, store the launcher's own Redis and store components (deploy/local/stack.py
                 `components()` of a StackConfig pointed at this directory and at
                 ports moved by LOCAL_CLUSTER_STORE_OFFSET): whatever store the
                 ordinary stack runs, the cluster runs too
    services     one supervisor (deploy/local/supervise.py) running two instances of
                 every service; a killed instance is restarted with backoff
    haproxy      Debian's HAProxy in front of the two gateways: health checks on
                 /readyz, least connections, WebSocket upgrades tunnelled

Everything binds to 127.0.0.1. Ports: the cluster's own start at
LOCAL_CLUSTER_PORT_BASE (default 10000 + LOCAL_PORT_OFFSET; see `ClusterPorts`);
the store's are the stack's defaults moved by LOCAL_PORT_OFFSET +
LOCAL_CLUSTER_STORE_OFFSET (default 700), so the ordinary stack and the
cluster run side by side. MESSENGER_NAMESPACE is empty unless
LOCAL_CLUSTER_NAMESPACE sets it.

    python -m deploy.local.cluster up|down|status|env
    python -m deploy.local.cluster kill NAME      # SIGKILL a component or service instance
    python -m deploy.local.cluster start NAME...  # start stopped infrastructure components
"""

from __future__ import annotations

import argparse
import base64
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.local import processes, stack
from deploy.local.stack import (
    HOST,
    KAFKA_LIBS,
    KAFKA_LOG4J2,
    REPO_ROOT,
    Component,
    Report,
    StackConfig,
    StackError,
)

KAFKA_NODES = (1, 2, 3)
INSTANCES = (1, 2)
#: Services with their HTTP port variable, in start order (the gateway last).
SERVICES: Mapping[str, str] = {
    "user_service": "USER_SERVICE_HTTP_PORT",
    "group_service": "GROUP_SERVICE_HTTP_PORT",
    "message_service": "MESSAGE_SERVICE_HTTP_PORT",
    "delivery_service": "DELIVERY_SERVICE_HTTP_PORT",
    "persister": "PERSISTER_HTTP_PORT",
    "notifier": "NOTIFIER_HTTP_PORT",
    "gateway": "GATEWAY_HTTP_PORT",
}
KAFKA_COMPONENTS = tuple(f"kafka-{n}" for n in KAFKA_NODES)
SUPERVISOR = "services"
LOAD_BALANCER = "haproxy"
DEFAULT_TIMEOUT_S = 240.0


def _quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ClusterPorts:
    """The cluster's own ports, laid out from one base."""

    base: int

    @property
    def load_balancer(self) -> int:
        return self.base

    def kafka(self, node: int) -> int:
        return self.base + 10 + node

    def controller(self, node: int) -> int:
        return self.base + 20 + node

    def service(self, name: str, instance: int) -> int:
        return self.base + 30 + 2 * list(SERVICES).index(name) + instance

    def gateway_metrics(self, instance: int) -> int:
        return self.base + 50 + instance


@dataclass(frozen=True)
class ClusterConfig:
    store: StackConfig
    ports: ClusterPorts
    namespace: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClusterConfig:
        env = os.environ if environ is None else environ
        offset = stack._env_int(env, "LOCAL_PORT_OFFSET", 0)
        base = stack._env_int(env, "LOCAL_CLUSTER_PORT_BASE", 10000 + offset)
        if not 1024 <= base <= 65000:
            raise StackError(f"LOCAL_CLUSTER_PORT_BASE={base} leaves no room for the cluster")
        state_dir = Path(env.get("LOCAL_CLUSTER_DIR") or REPO_ROOT / ".local" / "cluster")
        if not state_dir.is_absolute():
            state_dir = REPO_ROOT / state_dir
        # The ordinary stack's port variables would pin the store onto its ports: drop them.
        store_env = {
            k: v for k, v in env.items() if not (k.startswith("LOCAL_") and k.endswith("_PORT"))
        }
        store_offset = offset + stack._env_int(env, "LOCAL_CLUSTER_STORE_OFFSET", 700)
        store_env.update(LOCAL_PORT_OFFSET=str(store_offset), LOCAL_STACK_DIR=str(state_dir))
        return cls(
            store=StackConfig.from_env(store_env),
            ports=ClusterPorts(base),
            namespace=env.get("LOCAL_CLUSTER_NAMESPACE", ""),
        )

    @property
    def state_dir(self) -> Path:
        return self.store.state_dir

    @property
    def url(self) -> str:
        """Where clients reach the cluster: the load balancer."""
        return f"http://{HOST}:{self.ports.load_balancer}"

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(f"{HOST}:{self.ports.kafka(n)}" for n in KAFKA_NODES)

    def service_env(self) -> dict[str, str]:
        """The shared settings (libs/settings.py) every service instance of the cluster gets."""
        return {
            **self.store.endpoints.as_env(),
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "KAFKA_REPLICATION_FACTOR": "3",
            "MESSENGER_NAMESPACE": self.namespace,
            # Every client comes through HAProxy, which names it in X-Forwarded-For.
            "GATEWAY_RATE_TRUSTED_PROXIES": f"{HOST}/32",
        }

    def instance_url(self, service: str, instance: int) -> str:
        return f"http://{HOST}:{self.ports.service(service, instance)}"


# --------------------------------------------------------------------------- components


def store_components(config: ClusterConfig) -> list[Component]:
    """Redis and the store, as the launcher defines them (everything but its one broker)."""
    return [c for c in stack.components(config.store) if not c.name.startswith("kafka")]


def _kafka_properties(config: ClusterConfig, node: int, data_dir: Path) -> str:
    p = config.ports
    voters = ",".join(f"{n}@{HOST}:{p.controller(n)}" for n in KAFKA_NODES)
    return "\n".join(
        [
            "# Generated by deploy/local/cluster.py on every start.",
            "process.roles=broker,controller",
            f"node.id={node}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://{HOST}:{p.kafka(node)},CONTROLLER://{HOST}:{p.controller(node)}",
            f"advertised.listeners=PLAINTEXT://{HOST}:{p.kafka(node)}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data_dir}",
            "default.replication.factor=3",
            "min.insync.replicas=2",
            "unclean.leader.election.enable=false",
            "offsets.topic.replication.factor=3",
            "transaction.state.log.replication.factor=3",
            "transaction.state.log.min.isr=2",
            "share.coordinator.state.topic.replication.factor=3",
            "share.coordinator.state.topic.min.isr=2",
            "auto.create.topics.enable=false",
            "group.initial.rebalance.delay.ms=0",
            # Offset commits are answered at once, not after the group coordinator's
            # default 5 ms append linger (each consumer batch ends with a commit).
            "group.coordinator.append.linger.ms=0",
            # A killed broker's partitions move quickly; its controller seat too.
            "broker.session.timeout.ms=6000",
            "broker.heartbeat.interval.ms=1000",
            "",
        ]
    )


def _cluster_id(config: ClusterConfig) -> str:
    """One id for the three nodes, made once (Kafka's random-uuid format)."""
    path = config.state_dir / "kafka" / "cluster.id"
    if path.exists():
        return path.read_text().strip()
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cluster_id)
    return cluster_id


def _prepare_kafka(config: ClusterConfig, node: int, report: Report) -> None:
    node_dir = config.state_dir / "kafka" / f"node{node}"
    data_dir = node_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    props = node_dir / "server.properties"
    props.write_text(_kafka_properties(config, node, data_dir))
    if (data_dir / "meta.properties").exists():
        return
    cluster_id = _cluster_id(config)
    report(f"kafka-{node}: formatting {data_dir}")
    done = subprocess.run(
        [*STORAGE_TOOL, "format", "-t", cluster_id, "-c", str(props)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise StackError(f"formatting kafka-{node} failed: {lines[-1]}")


STORAGE_TOOL = ("java", "-cp", f"{KAFKA_LIBS}/*", "kafka.tools.StorageTool")


def _probe_port(port: int) -> None:
    if not processes.accepts_connections(HOST, port):
        raise ConnectionRefusedError(f"nothing accepts connections on {HOST}:{port}")


def kafka_components(config: ClusterConfig) -> list[Component]:
    p = config.ports
    return [
        Component(
            name=f"kafka-{node}",
            ports=(
                (p.kafka(node), "LOCAL_CLUSTER_PORT_BASE"),
                (p.controller(node), "LOCAL_CLUSTER_PORT_BASE"),
            ),
            argv=(
                "java",
                "-Xms128m",
                "-Xmx512m",
                "-XX:+UseG1GC",
                "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={KAFKA_LOG4J2}",
                "-cp",
                f"{KAFKA_LIBS}/*",
                "kafka.Kafka",
                str(config.state_dir / "kafka" / f"node{node}" / "server.properties"),
            ),
            probe=lambda node=node: _probe_port(p.kafka(node)),
            needs=(KAFKA_LIBS / "kafka_2.13-4.1.1.jar",),
            prepare=lambda report, node=node: _prepare_kafka(config, node, report),
            stop_timeout_s=30.0,
        )
        for node in KAFKA_NODES
    ]


def haproxy_config(config: ClusterConfig) -> str:
    """HAProxy in front of the two gateways (the shape of deploy/compose/haproxy.cfg)."""
    servers = [
        f"    server gateway-{i} {HOST}:{config.ports.service('gateway', i)}" for i in INSTANCES
    ]
    return "\n".join(
        [
            "# Generated by deploy/local/cluster.py on every start.",
            "global",
            "    maxconn 4000",
            "defaults",
            "    mode http",
            "    timeout connect 2s",
            "    timeout client 60s",
            "    timeout server 60s",
            "    timeout http-request 10s",
            "    timeout http-keep-alive 10s",
            "    timeout queue 10s",
            "    # An upgraded (WebSocket) connection is governed by this from then on.",
            "    timeout tunnel 1h",
            "    timeout client-fin 5s",
            "    timeout server-fin 5s",
            "    # A refused connection (a dead gateway not yet marked down) is retried on",
            "    # the other one; nothing is retried once the request was sent.",
            "    option redispatch",
            "    retries 2",
            "frontend public",
            f"    bind {HOST}:{config.ports.load_balancer}",
            "    monitor-uri /lb/healthz",
            "    option forwardfor",
            "    default_backend gateways",
            "backend gateways",
            "    balance leastconn",
            "    option httpchk",
            "    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host lb",
            "    http-check expect status 200",
            "    default-server check inter 1s fall 2 rise 2",
            *servers,
            "",
        ]
    )


def _prepare_haproxy(config: ClusterConfig) -> None:
    if stack.shutil.which("haproxy") is None:
        raise StackError("haproxy is not installed; run `make setup`")
    path = config.state_dir / "haproxy.cfg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(haproxy_config(config))


def _probe_http(url: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status != 200:
                raise RuntimeError(f"{url} answered {response.status}")
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{url} answered {exc.code}") from None


def haproxy_component(config: ClusterConfig) -> Component:
    return Component(
        name=LOAD_BALANCER,
        ports=((config.ports.load_balancer, "LOCAL_CLUSTER_PORT_BASE"),),
        argv=("haproxy", "-db", "-f", str(config.state_dir / "haproxy.cfg")),
        probe=lambda: _probe_http(f"{config.url}/lb/healthz"),
        prepare=lambda _report: _prepare_haproxy(config),
    )


def instance_name(service: str, instance: int) -> str:
    return f"{service}-{instance}"


def procfile(config: ClusterConfig) -> str:
    """One line per service instance: its ports and instance id, then `python -m`."""
    lines = ["# Generated by deploy/local/cluster.py on every start."]
    for service, port_env in SERVICES.items():
        for i in INSTANCES:
            env = {port_env: str(config.ports.service(service, i))}
            if service == "gateway":
                env["GATEWAY_METRICS_PORT"] = str(config.ports.gateway_metrics(i))
                env["GATEWAY_INSTANCE_ID"] = f"cluster-gw-{i}"
            assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
            lines.append(
                f"{instance_name(service, i)}: env {assignments} {sys.executable} -m {service}"
            )
    return "\n".join(lines) + "\n"


def _prepare_services(config: ClusterConfig, report: Report) -> None:
    (config.state_dir / "Procfile").write_text(procfile(config))
    env = {**os.environ, **config.service_env()}
    # Replication factor 3 needs all three brokers registered with the quorum, which
    # follows their ports opening by a few seconds: retry for a bounded while.
    deadline = time.monotonic() + 120
    while True:
        done = subprocess.run(
            [sys.executable, "-m", "libs.bootstrap"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode == 0:
            report(done.stdout.strip())
            return
        if time.monotonic() >= deadline:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            raise StackError(f"creating the cluster's topics failed: {lines[-1]}")
        time.sleep(2)


def _probe_services(config: ClusterConfig) -> None:
    for service in SERVICES:
        for i in INSTANCES:
            _probe_http(config.instance_url(service, i) + "/readyz")


def services_component(config: ClusterConfig) -> Component:
    ports = tuple(
        (config.ports.service(s, i), "LOCAL_CLUSTER_PORT_BASE") for s in SERVICES for i in INSTANCES
    )
    return Component(
        name=SUPERVISOR,
        ports=ports,
        argv=(
            sys.executable,
            "-m",
            "deploy.local.supervise",
            "--procfile",
            str(config.state_dir / "Procfile"),
        ),
        probe=lambda: _probe_services(config),
        prepare=lambda report: _prepare_services(config, report),
        stop_timeout_s=40.0,
        extra_env=config.service_env(),
    )


def components(config: ClusterConfig) -> list[Component]:
    """Start order: store and Redis, the brokers, the services, the load balancer."""
    return [
        *store_components(config),
        *kafka_components(config),
        services_component(config),
        haproxy_component(config),
    ]


def select(config: ClusterConfig, names: Sequence[str] | None) -> list[Component]:
    every = components(config)
    if not names:
        return every
    known = {c.name for c in every}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise StackError(f"unknown component {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return [c for c in every if c.name in names]


# --------------------------------------------------------------------------- lifecycle


def up(
    names: Sequence[str] | None = None,
    *,
    config: ClusterConfig | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    report: Report = _quiet,
) -> ClusterConfig:
    """Start what does not run, in order, each group ready before the next starts."""
    config = config or ClusterConfig.from_env()
    selected = select(config, names)
    started = time.monotonic()
    deadline = started + timeout_s
    store = stack.StackConfig(config.state_dir, config.store.ports)
    with stack._locked(store):
        missing = [p for c in selected for p in c.needs if not p.exists()]
        if missing:
            raise StackError(f"{missing[0]} is missing; run `make setup` first")
        # Groups that must answer before the next one starts: the services need the
        # brokers and the store, the load balancer checks the gateways.
        stages = [
            [c for c in selected if c.name not in (SUPERVISOR, LOAD_BALANCER)],
            [c for c in selected if c.name == SUPERVISOR],
            [c for c in selected if c.name == LOAD_BALANCER],
        ]
        for stage in stages:
            records: dict[str, processes.ProcessRecord] = {}
            fresh: set[str] = set()
            for component in stage:
                record = processes.read_record(stack._pidfile(store, component))
                if record is None:
                    conflict = stack._port_conflict(component)
                    if conflict:
                        raise conflict.error()
                    if component.prepare is not None:
                        component.prepare(report)
                    record = stack._spawn(store, component)
                    fresh.add(component.name)
                    report(f"{component.name}: started (pid {record.pid})")
                records[component.name] = record
            for component in stage:
                stack._wait_ready(store, component, records[component.name], deadline, timeout_s)
                state = "ready" if component.name in fresh else "already running"
                report(f"{component.name}: {state}")
    report(f"cluster up in {time.monotonic() - started:.1f} s; clients use {config.url}")
    return config


def down(
    names: Sequence[str] | None = None,
    *,
    config: ClusterConfig | None = None,
    report: Report = _quiet,
) -> None:
    """SIGTERM in reverse start order (clients' side first), SIGKILL what outlives it."""
    config = config or ClusterConfig.from_env()
    store = stack.StackConfig(config.state_dir, config.store.ports)
    with stack._locked(store):
        for component in reversed(select(config, names)):
            record = processes.read_record(stack._pidfile(store, component))
            if record is None:
                continue
            processes.signal_group(record.pid, signal.SIGTERM)
            stop_by = time.monotonic() + component.stop_timeout_s
            while processes.is_alive(record.pid, record.start_time):
                if time.monotonic() >= stop_by:
                    report(
                        f"{component.name}: no exit after {component.stop_timeout_s:.0f} s, SIGKILL"
                    )
                    processes.signal_group(record.pid, signal.SIGKILL)
                    stop_by = time.monotonic() + 10
                time.sleep(0.1)
            stack._pidfile(store, component).unlink(missing_ok=True)
            report(f"{component.name}: stopped (pid {record.pid})")


def status(config: ClusterConfig | None = None) -> list[stack.ComponentStatus]:
    config = config or ClusterConfig.from_env()
    store = stack.StackConfig(config.state_dir, config.store.ports)
    result = []
    for component in components(config):
        record = processes.read_record(stack._pidfile(store, component))
        address = f"{HOST}:{component.port}"
        if record is None:
            result.append(stack.ComponentStatus(component.name, "stopped", address))
            continue
        state = "running" if stack._is_ready(component) else "starting"
        result.append(stack.ComponentStatus(component.name, state, address, record.pid))
    return result


def is_running(config: ClusterConfig | None = None) -> bool:
    return all(s.state == "running" for s in status(config))


# --------------------------------------------------------------------------- faults


def kill(name: str, *, config: ClusterConfig | None = None) -> int:
    """SIGKILL one infrastructure component (`kafka-2`, `redis`...) or one service
    instance (`gateway-1`); returns the pid killed. Services come back through the
    supervisor; infrastructure stays down until `up([name])`."""
    config = config or ClusterConfig.from_env()
    store = stack.StackConfig(config.state_dir, config.store.ports)
    service, _, instance = name.rpartition("-")
    if service in SERVICES and instance.isdigit():
        pid = _listener_pid(config.ports.service(service, int(instance)))
        if pid is None:
            raise StackError(f"{name} is not running (nothing listens on its port)")
        os.kill(pid, signal.SIGKILL)
        return pid
    component = select(config, [name])[0]
    record = processes.read_record(stack._pidfile(store, component))
    if record is None:
        raise StackError(f"{name} is not running")
    processes.signal_group(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while processes.is_alive(record.pid, record.start_time) and time.monotonic() < deadline:
        time.sleep(0.05)
    return record.pid


def _listener_pid(port: int) -> int | None:
    holder = processes.describe_port_holder(port)  # "pid 123: <command line>"
    if not holder.startswith("pid "):
        return None
    return int(holder[4:].split(":", 1)[0])


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.cluster", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "status", "env", "kill", "start"))
    parser.add_argument("names", nargs="*")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    say = lambda line: print(line, flush=True)  # noqa: E731
    try:
        if args.command in ("up", "start"):
            up(args.names or None, timeout_s=args.timeout, report=say)
        elif args.command == "down":
            down(args.names or None, report=say)
        elif args.command == "status":
            states = status()
            for s in states:
                say(s.line())
            return 0 if all(s.state == "running" for s in states) else 3
        elif args.command == "env":
            config = ClusterConfig.from_env()
            for key, value in config.service_env().items():
                say(f"{key}={shlex.quote(value)}")
            say(f"MESSENGER_URL={config.url}")
        elif args.command == "kill":
            for name in args.names:
                say(f"{name}: killed pid {kill(name)}")
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""docker-compose.yml: validated by a real Compose implementation, then checked for shape.

No Docker engine and no network are needed: `docker-compose config` parses,
validates against its schema, merges the YAML anchors and interpolates the
variables without talking to a daemon. The structural checks then run on what
Compose itself resolved, not on our own reading of the anchors.

The binary is Debian's `docker-compose` package (Compose 1.29, Python). The
test fails, never skips, when it is missing: the project's setup installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
HAPROXY_CFG = ROOT / "deploy" / "compose" / "haproxy.cfg"
MONGO_INIT_REPLSETS = ROOT / "deploy" / "compose" / "mongo" / "mongo-init-replsets.js"
MONGO_INIT_SHARDS = ROOT / "deploy" / "compose" / "mongo" / "mongo-init-shards.js"

#: `python -m <module>` of each application service -> its settings prefix.
APP_MODULES = {
    "gateway": "GATEWAY",
    "user_service": "USER_SERVICE",
    "group_service": "GROUP_SERVICE",
    "message_service": "MESSAGE_SERVICE",
    "delivery_service": "DELIVERY_SERVICE",
    "persister": "PERSISTER",
    "notifier": "NOTIFIER",
}
CONSUMER_MODULES = sorted(set(APP_MODULES) - {"gateway"})
BOOTSTRAP_MODULE = "libs.bootstrap"

#: Variables docker-compose.yml interpolates; unset so their defaults are what is checked.
INTERPOLATED = ("MESSENGER_HTTP_PORT", "KAFKA_PARTITIONS", "LOG_LEVEL", "MESSENGER_IMAGE")


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail(
            "the `docker-compose` binary is not on PATH. These tests validate "
            "docker-compose.yml with a real Compose implementation and need no Docker "
            "engine: install Debian's package (`apt-get install -y docker-compose`), "
            "which the project's setup is meant to do.",
            pytrace=False,
        )
    return exe


def _run_compose(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMPOSE_", "DOCKER_")) and k not in INTERPOLATED
    }
    return subprocess.run(
        [_docker_compose(), "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@cache
def _resolved() -> dict:
    """The file as Compose resolved it (anchors merged, variables interpolated)."""
    proc = _run_compose("config")
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


def _services() -> dict[str, dict]:
    return _resolved()["services"]


def _is_one_shot(service: dict) -> bool:
    return str(service.get("restart", "no")) == "no"


def _command(service: dict) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else list(command)


def _app_services(module: str | None = None) -> dict[str, dict]:
    """Services running the project's image, optionally only `python -m <module>`."""
    found = {}
    for name, svc in _services().items():
        command = _command(svc)
        if not command or command[0] not in {*APP_MODULES, BOOTSTRAP_MODULE}:
            continue
        if module is None or command[0] == module:
            found[name] = svc
    return found


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE form
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _volume_mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each mount, short or long syntax."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append((str(volume.get("source", "")), str(volume["target"])))
        else:
            parts = volume.split(":")
            mounts.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
    return mounts


def _option(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


# --------------------------------------------------------------- validity ----


def test_compose_file_validates_with_docker_compose() -> None:
    proc = _run_compose("config", "-q")
    assert proc.returncode == 0, f"`docker-compose config -q` rejected the file:\n{proc.stderr}"


# --------------------------------------------------- health and start order ----


def test_every_long_running_service_has_a_healthcheck() -> None:
    missing = [
        name
        for name, svc in _services().items()
        if not _is_one_shot(svc)
        and (not svc.get("healthcheck", {}).get("test") or svc["healthcheck"].get("disable"))
    ]
    assert not missing, f"services without a healthcheck: {missing}"


def test_one_shot_jobs_do_not_restart_and_are_awaited_to_completion() -> None:
    services = _services()
    one_shots = {name for name, svc in services.items() if _is_one_shot(svc)}
    assert {"bootstrap", "mongo-init-replsets", "mongo-init-shards"} <= one_shots
    for job in one_shots:
        assert str(services[job].get("restart")) == "no", f'{job} must say restart: "no"'
        waiters = {
            name: deps[job]["condition"]
            for name, svc in services.items()
            if job in (deps := svc.get("depends_on") or {})
        }
        assert waiters, f"nothing waits for the one-shot job {job}"
        wrong = {n: c for n, c in waiters.items() if c != "service_completed_successfully"}
        assert not wrong, f"{job} must be awaited with service_completed_successfully: {wrong}"


def test_dependencies_are_awaited_on_health_not_on_start() -> None:
    services = _services()
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on must use the long form with conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            expected = (
                "service_completed_successfully"
                if _is_one_shot(services[dep])
                else "service_healthy"
            )
            assert spec.get("condition") == expected, (
                f"{name} -> {dep}: condition {spec.get('condition')!r}, expected {expected!r}"
            )


def test_application_services_wait_for_the_bootstrap_and_the_infrastructure() -> None:
    services = _services()
    kafka = {n for n, s in services.items() if str(s.get("image", "")).startswith("apache/kafka")}
    for name, svc in _app_services().items():
        deps = set(svc.get("depends_on") or {})
        if _command(svc)[0] == BOOTSTRAP_MODULE:
            assert kafka <= deps, f"{name}: {sorted(deps)}"
            assert "mongo-init-shards" in deps, f"{name}: {sorted(deps)}"
            continue
        needed = {"bootstrap", "redis", "mongos"} | kafka
        assert needed <= deps, f"{name} does not wait for {sorted(needed - deps)}"


# ------------------------------------------------------- application tier ----


def test_every_service_runs_with_enough_instances() -> None:
    gateways = _app_services("gateway")
    assert len(gateways) >= 2, f"gateways: {sorted(gateways)}"
    for module in CONSUMER_MODULES:
        instances = _app_services(module)
        assert len(instances) >= 2, f"{module} scales by consumer group: {sorted(instances)}"
    bootstrap = _app_services(BOOTSTRAP_MODULE)
    assert list(bootstrap) == ["bootstrap"]
    assert _is_one_shot(bootstrap["bootstrap"])


def test_gateway_instance_ids_are_unique() -> None:
    ids = [_env(svc).get("GATEWAY_INSTANCE_ID") for svc in _app_services("gateway").values()]
    assert all(ids), "every gateway sets GATEWAY_INSTANCE_ID"
    assert len(set(ids)) == len(ids), f"duplicate gateway instance ids: {ids}"


def test_application_services_listen_where_their_healthcheck_looks() -> None:
    for name, svc in _app_services().items():
        module = _command(svc)[0]
        if module == BOOTSTRAP_MODULE:
            continue
        prefix = APP_MODULES[module]
        env = _env(svc)
        assert env.get(f"{prefix}_HTTP_HOST") == "0.0.0.0", f"{name} must bind 0.0.0.0"
        port = env.get(f"{prefix}_HTTP_PORT")
        assert (port or "").isdigit(), f"{name} sets no {prefix}_HTTP_PORT"
        url = urlsplit(env.get("HEALTHCHECK_URL", ""))
        assert (url.port, url.path) == (int(port), "/readyz"), (
            f"{name}: {env.get('HEALTHCHECK_URL')}"
        )
        test = " ".join(svc["healthcheck"]["test"])
        assert "HEALTHCHECK_URL" in test, f"{name}: healthcheck does not use HEALTHCHECK_URL"


def test_application_configuration_is_environment_only() -> None:
    for name, svc in _app_services().items():
        assert not svc.get("volumes"), f"{name} mounts files; configuration is by environment only"
        assert not svc.get("env_file"), f"{name}: put the settings in environment:, not a file"


def test_application_environment_points_at_the_compose_infrastructure() -> None:
    services = _services()
    kafka = sorted(
        n for n, s in services.items() if str(s.get("image", "")).startswith("apache/kafka")
    )
    for name, svc in _app_services().items():
        env = _env(svc)
        brokers = sorted(env["KAFKA_BOOTSTRAP_SERVERS"].split(","))
        assert brokers == [f"{k}:9092" for k in kafka], f"{name}: {brokers}"
        redis = urlsplit(env["REDIS_URL"])
        assert redis.scheme == "redis", f"{name}: {env['REDIS_URL']}"
        assert redis.hostname in services, f"{name}: {env['REDIS_URL']}"
        shards = env["MONGO_SHARDS"].split(",")
        assert len(shards) == 1, f"{name}: the compose stack has one entry, the mongos: {shards}"
        mongos = urlsplit(shards[0])
        assert mongos.hostname == "mongos", f"{name}: {shards}"
        # A real MongoDB: the bootstrap makes the collections' own indexes (the same
        # IndexSpecs), not the local store's PostgreSQL lookup indexes.
        assert "MONGO_SHARDS_SQL" not in env, f"{name}: MONGO_SHARDS_SQL is the local store's"
        assert _command(services["mongos"])[0] == "mongos"
        assert int(env["KAFKA_REPLICATION_FACTOR"]) == 3 <= len(kafka)
        assert int(env["KAFKA_PARTITIONS"]) >= 2


# ------------------------------------------------------------ load balancer ----


def _haproxy_backend_servers() -> list[tuple[str, str, int]]:
    """(server name, host, port) of the `gateways` backend."""
    servers, section = [], None
    for raw in HAPROXY_CFG.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not raw[0].isspace():
            section = line.split()
            continue
        if section == ["backend", "gateways"] and line.startswith("server "):
            _, name, address, *_ = line.split()
            host, port = address.rsplit(":", 1)
            servers.append((name, host, int(port)))
    return servers


def _haproxy_section(header: str) -> list[str]:
    lines, inside = [], False
    for raw in HAPROXY_CFG.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if raw and not raw[0].isspace():
            inside = line == header
        elif inside and line:
            lines.append(line)
    return lines


def test_load_balancer_upstreams_are_exactly_the_gateways() -> None:
    gateways = {
        name: int(_env(svc)["GATEWAY_HTTP_PORT"]) for name, svc in _app_services("gateway").items()
    }
    upstreams = {host: port for _, host, port in _haproxy_backend_servers()}
    assert upstreams == gateways, f"haproxy backend {upstreams} != gateway services {gateways}"


def test_load_balancer_checks_readiness_and_keeps_websockets_open() -> None:
    backend = _haproxy_section("backend gateways")
    assert "option httpchk" in backend
    assert any(line.startswith("http-check send") and "/readyz" in line for line in backend)
    assert any(" check" in f" {line} " for line in backend if line.startswith("default-server"))
    defaults = _haproxy_section("defaults")
    assert "mode http" in defaults, "HTTP mode: HAProxy must see the Upgrade handshake"
    assert any(line.startswith("timeout tunnel") for line in defaults), (
        "WebSockets need `timeout tunnel`, or idle sockets are cut at `timeout client`"
    )


def test_load_balancer_container_is_wired_to_its_config_and_the_gateways() -> None:
    lb = _services()["lb"]
    assert str(lb["image"]).startswith("haproxy:")
    mounts = dict(_volume_mounts(lb))
    config = [src for src, dst in _volume_mounts(lb) if dst == "/usr/local/etc/haproxy/haproxy.cfg"]
    assert config, f"haproxy.cfg is not mounted: {mounts}"
    assert Path(config[0]).resolve() == HAPROXY_CFG.resolve(), mounts
    assert set(lb["depends_on"]) == set(_app_services("gateway"))
    bind_ports = {
        int(line.split(":")[-1])
        for line in _haproxy_section("frontend public")
        if line.startswith("bind")
    }
    targets = set()
    for port in lb.get("ports") or []:
        targets.add(
            int(port["target"])
            if isinstance(port, dict)
            else int(str(port).split(":")[-1].split("/")[0])
        )
    assert bind_ports, "frontend public binds no port"
    assert bind_ports <= targets, f"frontend binds {bind_ports}, published {targets}"


# ------------------------------------------------------------ infrastructure ----


def test_kafka_is_a_three_node_kraft_cluster_with_rf3_and_min_isr2() -> None:
    kafka = {
        n: _env(s)
        for n, s in _services().items()
        if str(s.get("image", "")).startswith("apache/kafka")
    }
    assert len(kafka) == 3, sorted(kafka)
    node_ids = {env["KAFKA_NODE_ID"] for env in kafka.values()}
    assert len(node_ids) == 3
    voters = {f"{env['KAFKA_NODE_ID']}@{name}:9093" for name, env in kafka.items()}
    cluster_ids = set()
    for name, env in kafka.items():
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) >= {"broker", "controller"}
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters, name
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        cluster_ids.add(env["CLUSTER_ID"])
    assert len(cluster_ids) == 1, "one CLUSTER_ID for the whole cluster"


def _mongods() -> dict[str, tuple[str, str, int]]:
    """service -> (role flag, replica set, port) of every mongod."""
    found = {}
    for name, svc in _services().items():
        command = _command(svc)
        if command and command[0] == "mongod":
            role = "--configsvr" if "--configsvr" in command else "--shardsvr"
            assert role in command, f"{name}: a cluster member is a configsvr or a shardsvr"
            found[name] = (role, _option(command, "--replSet"), int(_option(command, "--port")))
    return found


def _js_hosts(path: Path) -> set[str]:
    return set(re.findall(r"\b(mongo-[a-z0-9-]+:\d+)\b", path.read_text()))


def test_mongodb_is_a_sharded_cluster_of_replica_sets() -> None:
    mongods = _mongods()
    config_sets = {rs for role, rs, _ in mongods.values() if role == "--configsvr"}
    shard_sets = {rs for role, rs, _ in mongods.values() if role == "--shardsvr"}
    assert len(config_sets) == 1, "one config server replica set"
    assert len(shard_sets) >= 2, "at least two shard replica sets"
    for rs in config_sets | shard_sets:
        members = [n for n, (_, s, _) in mongods.items() if s == rs]
        assert len(members) >= 3, f"replica set {rs} needs 3 members to survive one loss: {members}"

    # mongos reads its config from exactly the config server replica set.
    configdb = _option(_command(_services()["mongos"]), "--configdb")
    rs_name, hosts = configdb.split("/", 1)
    assert {rs_name} == config_sets
    assert set(hosts.split(",")) == {
        f"{n}:{port}" for n, (role, _, port) in mongods.items() if role == "--configsvr"
    }

    # Every mongod volume is named, so data outlives the containers.
    declared = set(_resolved().get("volumes") or {})
    for name in mongods:
        sources = [src for src, dst in _volume_mounts(_services()[name]) if dst == "/data/db"]
        assert sources, f"{name}: /data/db is not a volume"
        assert sources[0] in declared, f"{name}: /data/db must be a named volume"


def test_mongo_init_scripts_name_the_compose_members() -> None:
    mongods = _mongods()
    members = {f"{n}:{port}" for n, (_, _, port) in mongods.items()}
    assert _js_hosts(MONGO_INIT_REPLSETS) == members
    shard_members = {
        f"{n}:{port}" for n, (role, _, port) in mongods.items() if role == "--shardsvr"
    }
    assert _js_hosts(MONGO_INIT_SHARDS) == shard_members
    text = MONGO_INIT_REPLSETS.read_text() + MONGO_INIT_SHARDS.read_text()
    for rs in {rs for _, rs, _ in mongods.values()}:
        assert f'"{rs}"' in text, f"replica set {rs} is not named in the init scripts"
    for job, script in (
        ("mongo-init-replsets", MONGO_INIT_REPLSETS),
        ("mongo-init-shards", MONGO_INIT_SHARDS),
    ):
        svc = _services()[job]
        assert _command(svc)[-1] == f"/scripts/{script.name}"
        mounts = {dst: src for src, dst in _volume_mounts(svc)}
        assert Path(mounts["/scripts"]).resolve() == script.parent.resolve()


def test_redis_persists_with_append_only_file() -> None:
    redis = _services()["redis"]
    command = _command(redis)
    assert _option(command, "--appendonly") == "yes"
    assert any(dst == "/data" for _, dst in _volume_mounts(redis))


def test_stateful_services_use_declared_named_volumes() -> None:
    declared = set(_resolved().get("volumes") or {})
    stateful = [
        n
        for n, s in _services().items()
        if str(s.get("image", "")).split(":")[0] in {"apache/kafka", "redis"}
        or _command(s)[:1] == ["mongod"]
    ]
    assert len(stateful) == 3 + 9 + 1
    for name in stateful:
        named = [
            src
            for src, _ in _volume_mounts(_services()[name])
            if src and not src.startswith(("/", "."))
        ]
        assert named, f"{name} keeps its data in no named volume"
        assert set(named) <= declared, f"{name}: undeclared volumes {set(named) - declared}"
    used = {src for s in _services().values() for src, _ in _volume_mounts(s)}
    assert declared <= used, f"declared but unused volumes: {declared - used}"

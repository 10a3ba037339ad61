"""`setup`: installs and builds what the local stack runs, each step skipped when up to date.

Owns the artifacts the stack needs: Debian packages (redis-server, redis-tools,
docker-compose, haproxy, chromium and chromium-driver; see DEBIAN_PACKAGES; installed
with apt-get when missing),
PostgreSQL's server (Debian's `postgresql` when no /usr/lib/postgresql/*/bin/postgres
is installed), Kafka's broker jars in
deploy/kafka/target/libs (`mvn package`, redone when pom.xml is newer than the
last successful build), S3Proxy's jars in deploy/s3proxy/target/libs (the same
way) and deploy/ferretdb/ferretdb-local (`go build`, redone when main.go, go.mod
or go.sum is newer than the binary).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from deploy.local.stack import (
    FERRETDB_BINARY,
    KAFKA_LIBS,
    REPO_ROOT,
    S3PROXY_LIBS,
    Report,
    StackError,
    postgres_bin,
)

KAFKA_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
KAFKA_STAMP = KAFKA_LIBS.parent / ".libs.stamp"
S3PROXY_POM = REPO_ROOT / "deploy" / "s3proxy" / "pom.xml"
S3PROXY_STAMP = S3PROXY_LIBS.parent / ".libs.stamp"
FERRETDB_SOURCES = tuple(FERRETDB_BINARY.parent / n for n in ("main.go", "go.mod", "go.sum"))
MIN_JAVA = 17  # Kafka 4.x brokers need Java 17


def setup(report: Report = print) -> None:
    """Make every artifact of the stack present and current; prints what it does."""
    started = time.monotonic()
    _ensure_debian_packages(report)
    _ensure_postgresql(report)
    _check_java(report)
    _build_kafka(report)
    _build_s3proxy(report)
    _build_ferretdb(report)
    report(f"setup done in {time.monotonic() - started:.1f} s")


def _require(tool: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise StackError(f"{tool} is not installed (needed {why}); install it, then `make setup`")
    return path


def _run(
    argv: list[str],
    what: str,
    report: Report,
    cwd: Path = REPO_ROOT,
    env: dict[str, str] | None = None,
) -> None:
    """Run a build step quietly; on failure show the tail of its output, then one error line."""
    started = time.monotonic()
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        check=False,
    )
    if done.returncode != 0:
        tail = done.stdout.strip().splitlines()[-25:]
        report("\n".join(f"  | {line}" for line in tail))
        raise StackError(f"{what} failed (exit {done.returncode}); its last output is above")
    report(f"  {what} took {time.monotonic() - started:.0f} s")


#: Commands the project needs from Debian's packages, and the package of each:
#: the Redis server, redis-benchmark (a `make bench` baseline), Compose (the
#: tests validate docker-compose.yml with a real Compose implementation), and
#: Chromium with its WebDriver (the web client's browser tests, tests/webapp).
DEBIAN_PACKAGES = {
    "redis-server": "redis-server",
    "redis-benchmark": "redis-tools",
    "docker-compose": "docker-compose",
    # The load balancer in front of the gateways in cluster mode (deploy/local/cluster.py).
    "haproxy": "haproxy",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
}
#: Files the project needs from Debian's packages, and the package of each: an emoji
#: font, so the browser tests' screenshots show reactions as people see them.
DEBIAN_FILES = {
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf": "fonts-noto-color-emoji",
}
#: Wait for a concurrent apt or dpkg (another checkout's setup) instead of failing.
APT_LOCK_WAIT = ("-o", "DPkg::Lock::Timeout=600")


def _ensure_debian_packages(report: Report) -> None:
    missing = sorted(
        {pkg for tool, pkg in DEBIAN_PACKAGES.items() if not shutil.which(tool)}
        | {pkg for path, pkg in DEBIAN_FILES.items() if not Path(path).exists()}
    )
    if not missing:
        names = {*DEBIAN_PACKAGES.values(), *DEBIAN_FILES.values()}
        report("debian packages installed: " + ", ".join(sorted(names)))
        return
    names = " ".join(missing)
    if shutil.which("apt-get") is None:
        raise StackError(f"{names} not installed and there is no apt-get; install them")
    if os.geteuid() != 0:
        raise StackError(f"{names} not installed; run: sudo apt-get install -y {names}")
    # RUNLEVEL=1 keeps the package's init script from starting a system-wide redis on 6379.
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
    install = ["apt-get", *APT_LOCK_WAIT, "install", "-y", "-q", "--no-install-recommends"]
    install += missing
    report(f"{names}: installing with apt-get")
    if subprocess.run(install, env=env, stdin=subprocess.DEVNULL, check=False).returncode != 0:
        report(f"{names}: install failed, refreshing the package lists and retrying")
        _run(["apt-get", *APT_LOCK_WAIT, "update", "-q"], "apt-get update", report, env=env)
        _run(install, f"apt-get install {names}", report, env=env)
    still = [tool for tool in DEBIAN_PACKAGES if not shutil.which(tool)]
    still += [path for path in DEBIAN_FILES if not Path(path).exists()]
    if still:
        raise StackError(f"apt-get ran but {', '.join(still)} is still not on PATH")


#: Waits for another apt/dpkg run (other checkouts on the machine) instead of failing.
APT_LOCK_WAIT = ["-o", "DPkg::Lock::Timeout=600"]


def _ensure_postgresql(report: Report) -> None:
    """PostgreSQL's server, under the FerretDB shards (docs/storage.md)."""
    if postgres_bin("postgres").exists():
        report(f"postgresql: {postgres_bin('postgres').parent.parent.name} installed")
        return
    if shutil.which("apt-get") is None:
        raise StackError("PostgreSQL is not installed and there is no apt-get; install it")
    if os.geteuid() != 0:
        raise StackError("PostgreSQL is not installed; run: sudo apt-get install -y postgresql")
    # RUNLEVEL=1 keeps the package from starting a system-wide cluster on 5432.
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
    report("postgresql: installing with apt-get")
    _run(["apt-get", *APT_LOCK_WAIT, "update", "-q"], "apt-get update", report, env=env)
    install = ["apt-get", *APT_LOCK_WAIT, "install", "-y", "-q", "--no-install-recommends"]
    _run([*install, "postgresql"], "apt-get install postgresql", report, env=env)
    if not postgres_bin("postgres").exists():
        raise StackError("apt-get installed postgresql but no /usr/lib/postgresql/*/bin/postgres")


def _check_java(report: Report) -> None:
    java = _require("java", "to run the Kafka broker")
    done = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if match:
        major = int(match.group(1))
        if major == 1 and match.group(2):  # "1.8" style
            major = int(match.group(2))
        if major < MIN_JAVA:
            raise StackError(f"Kafka 4 needs Java {MIN_JAVA} or newer; `java` is version {major}")
        report(f"java: version {major}")


def _newest_mtime(paths: tuple[Path, ...]) -> float:
    return max(p.stat().st_mtime for p in paths)


def _build_kafka(report: Report) -> None:
    if KAFKA_STAMP.exists() and KAFKA_STAMP.stat().st_mtime >= KAFKA_POM.stat().st_mtime:
        report("kafka jars: up to date (deploy/kafka/target/libs)")
        return
    mvn = _require("mvn", "to fetch the Kafka broker jars")
    report("kafka jars: mvn package (Kafka 4.1.1 from Maven Central; ~1 min the first time)")
    _run(
        [mvn, "-q", "-B", "-f", str(KAFKA_POM), "package"],
        "mvn package",
        report,
    )
    if not any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
        raise StackError(f"mvn package produced no kafka_2.13 jar in {KAFKA_LIBS}")
    KAFKA_STAMP.touch()


def _build_s3proxy(report: Report) -> None:
    if S3PROXY_STAMP.exists() and S3PROXY_STAMP.stat().st_mtime >= S3PROXY_POM.stat().st_mtime:
        report("s3proxy jars: up to date (deploy/s3proxy/target/libs)")
        return
    mvn = _require("mvn", "to fetch the S3Proxy jars")
    report("s3proxy jars: mvn package (S3Proxy 2.6.0 from Maven Central)")
    _run([mvn, "-q", "-B", "-f", str(S3PROXY_POM), "package"], "mvn package (s3proxy)", report)
    if not any(S3PROXY_LIBS.glob("s3proxy-*.jar")):
        raise StackError(f"mvn package produced no s3proxy jar in {S3PROXY_LIBS}")
    S3PROXY_STAMP.touch()


def _build_ferretdb(report: Report) -> None:
    if FERRETDB_BINARY.exists() and FERRETDB_BINARY.stat().st_mtime >= _newest_mtime(
        FERRETDB_SOURCES
    ):
        report("ferretdb-local: up to date (deploy/ferretdb/ferretdb-local)")
        return
    go = _require("go", "to build FerretDB")
    report("ferretdb-local: go build (FerretDB v1.24.2 via the Go module proxy; ~3 min cold)")
    argv = [go, "build", "-o", FERRETDB_BINARY.name, "."]
    _run(argv, "go build", report, cwd=FERRETDB_BINARY.parent)

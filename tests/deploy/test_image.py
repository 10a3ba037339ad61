"""The container image: it is built the agreed way and its entry points are the services that exist.

Nothing is built here (there is no Docker engine): the Dockerfile and
.dockerignore are read, and every `python -m <module>` that docker-compose.yml
and the Kubernetes base run is checked to be a module the image will contain:
a `<name>/__main__.py` in the repository, packaged by pyproject.toml, and not
excluded from the build context.
"""

from __future__ import annotations

import json
import re
import tomllib
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

#: The services of README.md, Architecture, each started with `python -m <name>`.
SERVICES = (
    "gateway",
    "user_service",
    "group_service",
    "message_service",
    "delivery_service",
    "persister",
    "notifier",
)
BOOTSTRAP = "libs.bootstrap"


# ------------------------------------------------------------- Dockerfile ----


@cache
def _instructions() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) with continuations joined, comments and heredoc bodies dropped."""
    lines = DOCKERFILE.read_text().splitlines()
    result, buffer, heredoc_end = [], "", None
    for raw in lines:
        if heredoc_end is not None:
            if raw.strip() == heredoc_end:
                heredoc_end = None
            continue
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        line = buffer + stripped
        buffer = ""
        match = re.search(r"<<-?'?\"?(\w+)'?\"?", line)
        if match and line.split(None, 1)[0].upper() == "RUN":
            heredoc_end = match.group(1)
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return tuple(result)


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in _instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def _args() -> dict[str, str]:
    """Global ARG defaults (before the first FROM)."""
    defaults = {}
    for keyword, args in _instructions():
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name] = value
    return defaults


def _base_image(from_args: str) -> str:
    image = from_args.split()[0]
    for name, value in _args().items():
        image = image.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return image


def _exec_form(keyword: str) -> list[str]:
    found = [args for kw, args in _stages()[-1] if kw == keyword]
    assert found, f"the final stage has no {keyword}"
    return json.loads(found[-1])


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    stages = _stages()
    assert len(stages) >= 2, "multi-stage: build in one stage, run from a clean one"
    for stage in stages:
        image = _base_image(stage[0][1])
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", image), f"base image {image}"


def test_final_stage_runs_as_a_non_root_user() -> None:
    users = [args for kw, args in _stages()[-1] if kw == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    for name, value in re.findall(
        r"ARG (\w+)=(\S+)", "\n".join(f"{k} {a}" for k, a in _stages()[-1])
    ):
        user = user.replace(f"${{{name}}}", value)
    assert user not in {"root", "0"}, f"USER {user}"
    if user.isdigit():
        assert int(user) >= 1000, "a system-range uid may collide with the host's users"


def test_entry_point_is_python_dash_m_and_the_default_command_is_a_service() -> None:
    assert _exec_form("ENTRYPOINT") == ["python", "-m"]
    command = _exec_form("CMD")
    assert len(command) == 1, f"CMD {command}"
    assert command[0] in SERVICES, f"CMD {command}"


def test_dependencies_are_installed_from_the_lock_before_the_code_is_copied() -> None:
    build = _stages()[0]
    lock_install = next(
        (i for i, (kw, args) in enumerate(build) if kw == "RUN" and "requirements.lock" in args),
        None,
    )
    assert lock_install is not None, "the build stage does not install from requirements.lock"
    copy_all = next(
        (i for i, (kw, args) in enumerate(build) if kw == "COPY" and args.split()[0] == "."),
        None,
    )
    assert copy_all is not None, "the build stage never copies the source (COPY . .)"
    assert lock_install < copy_all, (
        "install the locked dependencies before copying the source, so edits keep that layer"
    )
    project_install = [
        args for kw, args in build[copy_all:] if kw == "RUN" and "pip install" in args
    ]
    assert any("--no-deps" in args for args in project_install), (
        "the project is installed after its dependencies, without resolving them again"
    )


def test_every_runtime_dependency_is_pinned_in_the_lock() -> None:
    """The image installs pyproject's dependencies constrained by the lock: each must be in it."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {
        re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for requirement in dependencies:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]).lower()
        assert name in pinned, (
            f"{name} is a runtime dependency but requirements.lock pins no version"
        )


# ---------------------------------------------------------- .dockerignore ----


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes?, regex) per .dockerignore line, Docker's syntax: last match wins."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex += pattern[i : end + 1]
                i = end + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((not negate, re.compile(regex)))
    return rules


def _excluded(path: str) -> bool:
    """Whether the build context leaves `path` out (a rule on a parent directory applies too)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for excludes, regex in _ignore_rules():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = excludes
    return excluded


def test_build_context_has_what_the_image_needs() -> None:
    needed = ["pyproject.toml", "requirements.lock", "libs/__init__.py", "libs/settings.py"]
    needed += [f"{service}/__main__.py" for service in SERVICES]
    needed += [f"{service}/sub/module.py" for service in SERVICES]
    kept_out = [path for path in needed if _excluded(path)]
    assert not kept_out, f".dockerignore leaves out files the image needs: {kept_out}"


def test_build_context_leaves_out_local_state() -> None:
    unwanted = [
        ".git/HEAD",
        ".venv/bin/python",
        ".local/kafka/data",
        "deploy/kafka/target/x.jar",
        "deploy/ferretdb/ferretdb-local",
        "tests/conftest.py",
        "bench/results/x.json",
        "libs/__pycache__/settings.cpython-311.pyc",
        "gateway/__pycache__/app.cpython-311.pyc",
        "messenger.egg-info/PKG-INFO",
        ".env",
    ]
    let_in = [path for path in unwanted if not _excluded(path)]
    assert not let_in, f".dockerignore lets local state into the build context: {let_in}"


# ------------------------------------------------------------ entry points ----


def _compose_modules() -> set[str]:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    modules = set()
    for svc in services.values():
        if "build" in svc or str(svc.get("image", "")).startswith("${MESSENGER_IMAGE"):
            command = svc.get("command")
            assert command, "a service of the project's image must name its module"
            modules.add(command[0] if isinstance(command, list) else command.split()[0])
    return modules


def _k8s_modules() -> set[str]:
    modules = set()
    for path in (ROOT / "deploy" / "k8s").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") not in {"Deployment", "Job"}:
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                modules.add(container["args"][0])
    return modules


def _module_exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return (path / "__main__.py").is_file() or path.with_suffix(".py").is_file()


def test_compose_and_kubernetes_run_the_same_entry_points() -> None:
    compose, k8s = _compose_modules(), _k8s_modules()
    assert compose == k8s, f"compose runs {sorted(compose)}, Kubernetes {sorted(k8s)}"
    assert compose == {*SERVICES, BOOTSTRAP}


def test_every_entry_point_is_a_module_in_the_repository() -> None:
    """`python -m <name>` needs <name>/__main__.py (or <name>.py for libs.bootstrap)."""
    entry_points = _compose_modules() | _k8s_modules() | set(_exec_form("CMD"))
    missing = sorted(m for m in entry_points if not _module_exists(m))
    assert not missing, (
        f"the image would be started with `python -m` on modules that do not exist yet: {missing}"
    )


def test_every_entry_point_is_packaged_into_the_image() -> None:
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    packages = {pattern.rstrip("*").rstrip(".") for pattern in include}
    for module in _compose_modules() | _k8s_modules():
        top = module.split(".")[0]
        assert top in packages, f"pyproject.toml does not package {top}, which the image runs"
        assert not _excluded(f"{top}/__init__.py"), f".dockerignore leaves {top} out"

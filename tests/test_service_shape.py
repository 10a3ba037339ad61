"""Every service reads the same way (docs/services.md): entry, settings, app, handlers,
repository; built through the one skeleton (libs/service.py) with no I/O until it starts.

Pure: imports and builds the applications, starts nothing.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from aiohttp import web

from libs.service import Service
from libs.settings import ConsumerBatches, ProjectionChecks, ServiceSettings
from tests.support.system import ROOT, SERVICES

#: Where each service keeps what the shape names; the gateway's handlers are its route
#: modules, and it owns no stored shape of its own (it reads through libs/readmodels,
#: and its attachments and push targets are libs/media and libs/push_targets).
HANDLERS = {"gateway": "gateway/routes/__init__.py"}
REPOSITORY = {"gateway": None}
SHARED_SETTINGS = (ServiceSettings, ConsumerBatches, ProjectionChecks)


def declaration(service: str) -> Service:
    return importlib.import_module(f"{service}.app").SERVICE


@pytest.mark.parametrize("service", SERVICES)
def test_the_entry_is_serve_of_the_declaration(service: str) -> None:
    tree = ast.parse((ROOT / service / "__main__.py").read_text())
    docstring, *statements = tree.body
    assert isinstance(docstring, ast.Expr)
    assert isinstance(docstring.value, ast.Constant)
    imports = sorted(
        (node.module, alias.name)
        for node in statements
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    )
    assert imports == sorted([("libs.lifecycle", "serve"), (f"{service}.app", "SERVICE")])
    (guard,) = [node for node in statements if not isinstance(node, ast.ImportFrom)]
    assert isinstance(guard, ast.If)
    assert ast.unparse(guard.test) == "__name__ == '__main__'"
    assert [ast.unparse(node) for node in guard.body] == ["serve(SERVICE)"]


@pytest.mark.parametrize("service", SERVICES)
def test_the_app_is_declared_through_the_skeleton(service: str) -> None:
    module = importlib.import_module(f"{service}.app")
    declared = declaration(service)
    assert isinstance(declared, Service)
    assert declared.name == service
    # No wiring of its own beside the declaration.
    assert not hasattr(module, "create_app")
    app = declared.create_app(declared.settings())
    assert isinstance(app, web.Application)
    paths = {resource.canonical for resource in app.router.resources()}
    assert {"/healthz", "/readyz"} <= paths


@pytest.mark.parametrize("service", SERVICES)
def test_one_settings_class_derives_from_the_base(service: str) -> None:
    settings_module = importlib.import_module(f"{service}.settings")
    declared = declaration(service)
    assert declared.settings.__module__ == settings_module.__name__
    assert issubclass(declared.settings, ServiceSettings)
    own = [
        value
        for value in vars(settings_module).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value.__module__ == settings_module.__name__
    ]
    assert own == [declared.settings]
    if declared.consumers:
        assert issubclass(declared.settings, ConsumerBatches)


def test_no_field_is_declared_by_two_services_unless_shared() -> None:
    """A field two services both have is declared once, in a shared class; a service
    only overrides its default."""
    declared_by: dict[str, list[str]] = {}
    for service in SERVICES:
        for name in vars(declaration(service).settings).get("__annotations__", {}):
            declared_by.setdefault(name, []).append(service)
    shared = {name for base in SHARED_SETTINGS for name in base.model_fields}
    repeated = {name: who for name, who in declared_by.items() if len(who) > 1}
    assert repeated, "every service overrides at least http_port"
    assert set(repeated) <= shared, {n: w for n, w in repeated.items() if n not in shared}


@pytest.mark.parametrize("service", SERVICES)
def test_handlers_and_repository_are_where_the_shape_says(service: str) -> None:
    assert (ROOT / HANDLERS.get(service, f"{service}/handlers.py")).is_file()
    repository = REPOSITORY.get(service, f"{service}/repository.py")
    if repository is not None:
        assert (ROOT / repository).is_file()


def _kind(context: object) -> str:
    name = getattr(getattr(context, "func", context), "__qualname__", "")
    for kind in ("redis", "mongo", "producer", "consumer"):
        if name.startswith(f"{kind}_context."):
            return kind
    return "own"


@pytest.mark.parametrize("service", SERVICES)
def test_consumers_open_last_and_close_first(service: str) -> None:
    """Cleanup contexts close in reverse: consumers stop first, then the service's own
    contexts, then the producer, MongoDB and Redis."""
    declared = declaration(service)
    kinds = [_kind(c) for c in declared.create_app(declared.settings()).cleanup_ctx]
    rank = {"redis": 0, "mongo": 1, "producer": 2, "own": 3, "consumer": 4}
    assert kinds == sorted(kinds, key=rank.__getitem__), kinds
    assert kinds.count("consumer") == len(declared.consumers)
    if declared.consumers:
        assert "producer" in kinds


#: Imports each named module and builds each service's app, recording the I/O that
#: code under the given roots does itself (what third-party imports do is theirs).
IO_PROBE = textwrap.dedent(
    """
    import importlib, json, os, sys

    roots = tuple(os.path.abspath(r) + os.sep for r in json.loads(sys.argv[1]))
    found = []

    def ours(frame):
        inner = None
        while frame is not None:
            name = frame.f_code.co_filename
            if name.startswith(roots):
                # The closest frame of ours; an import statement there runs
                # someone else's module, whose I/O is not ours.
                return inner is None or not inner.startswith("<frozen importlib")
            inner, frame = name, frame.f_back
        return False

    def hook(event, args):
        if event == "open":
            if str(args[0]).endswith((".py", ".pyc", ".so")):
                return
        elif not event.startswith(
            ("socket.", "subprocess.", "os.system", "os.posix_spawn", "os.fork", "os.exec")
        ):
            return
        if ours(sys._getframe(1)):
            found.append([event, repr(args)[:200]])

    sys.addaudithook(hook)
    for name in json.loads(sys.argv[2]):
        module = importlib.import_module(name)
        service = getattr(module, "SERVICE", None)
        if service is not None:
            service.create_app(service.settings())
    print(json.dumps(found))
    """
)


def run_probe(roots: list[Path], modules: list[str], cwd: Path) -> list[list[str]]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(cwd)}
    result = subprocess.run(
        [sys.executable, "-c", IO_PROBE, json.dumps([str(r) for r in roots]), json.dumps(modules)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


def test_importing_and_building_the_services_does_no_io() -> None:
    roots = [ROOT / "libs", *(ROOT / service for service in SERVICES)]
    modules = [f"{s}.{m}" for s in SERVICES for m in ("settings", "app", "__main__")]
    assert run_probe(roots, modules, ROOT) == []


def test_the_io_probe_sees_io_at_import(tmp_path: Path) -> None:
    """The probe above can fail: a module that reads a file or opens a socket at
    import is caught, while the I/O of what it imports is not held against it."""
    package = tmp_path / "probe_subject"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "reads.py").write_text("import json\nTEXT = open(__file__ + '.txt').read()\n")
    (package / "reads.py.txt").write_text("data")
    (package / "connects.py").write_text("import socket\nsocket.socket().bind(('127.0.0.1', 0))\n")
    found = run_probe([package], ["probe_subject.reads", "probe_subject.connects"], tmp_path)
    events = [event for event, _ in found]
    assert "open" in events
    assert "socket.bind" in events

"""Schemathesis against the live stack: no server error, no answer outside the OpenAPI.

Every operation of /v1/openapi.json (but the WebSocket upgrade) gets schema-made
and edge-case requests as a fresh user (tests/security/fuzz_hooks.py), plus the
stateful phase that chains them through the spec's links. Bounded: a few
examples per operation, a fixed seed-free deterministic mode, and a timeout.
Checks: not_a_server_error, status_code_conformance, content_type_conformance,
response_headers_conformance, response_schema_conformance.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.system import ROOT, RunningSystem

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
EXAMPLES_PER_OPERATION = os.environ.get("FUZZ_MAX_EXAMPLES", "10")


def test_the_api_answers_fuzzed_requests_within_its_spec(
    system: RunningSystem, tmp_path: Path
) -> None:
    gateway = system.gateway_url
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{gateway}/v1/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--exclude-path",
        "/v1/ws",
        "--max-examples",
        EXAMPLES_PER_OPERATION,
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-deterministic",
        "--no-color",
    ]
    env = {
        **os.environ,
        "FUZZ_GATEWAY_URL": gateway,
        "SCHEMATHESIS_HOOKS": "tests.security.fuzz_hooks",
    }
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    report = (done.stdout + done.stderr)[-20_000:]
    (tmp_path / "schemathesis.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, report
    assert "Tested:" in done.stdout, report

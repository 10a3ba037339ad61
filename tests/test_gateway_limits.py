"""Every service (the gateway above all) lifts its open-file limit at start, so it can hold
more than ~1,000 sockets."""

from __future__ import annotations

import resource
import subprocess
import sys

from tests.support.system import ROOT


def test_open_file_soft_limit_is_raised_to_the_hard_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    code = (
        "import resource; from libs.lifecycle import raise_open_file_limit;"
        "print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    # Start from a low soft limit, as a default shell would give.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, "
            f"({low}, {hard})); exec({code!r})",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    returned, soft = (int(x) for x in result.stdout.split())
    assert soft == returned == hard

"""`python -m gateway`."""

import resource

from gateway.app import create_app
from gateway.settings import GatewaySettings
from libs.lifecycle import serve
from libs.settings import load_settings


def raise_open_file_limit() -> int:
    """Lift the soft limit on open files to the hard one: one descriptor per socket.

    A shell's default soft limit (often 1,024) would cap the gateway at about a
    thousand WebSockets however much memory it has. Returns the limit in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def main() -> None:
    raise_open_file_limit()
    serve("gateway", lambda: load_settings(GatewaySettings), create_app)


if __name__ == "__main__":
    main()

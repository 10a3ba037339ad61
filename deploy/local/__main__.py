"""Command line of the local launcher: `python -m deploy.local <command>` from the repo root.

Owns argument parsing and the promise that every failure ends as one line on
stderr with exit code 1 (LOCAL_STACK_DEBUG=1 shows the traceback of an
unexpected one). `status` exits 3 when something is not running.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from deploy.local import stack
from deploy.local.stack import DEFAULT_TIMEOUT_S, StackError


def _say(line: str) -> None:
    print(line, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local",
        description=(
            "Run Redis, Kafka, PostgreSQL and two FerretDB shards locally (state in .local/)."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names_help = "components (default: all): redis kafka postgres ferretdb-shard0 ferretdb-shard1"

    commands.add_parser(
        "setup", help="install redis-server and PostgreSQL, fetch Kafka jars, build FerretDB"
    )
    for name, text in (
        ("up", "start what is not running and wait until all is ready"),
        ("wait", "wait until all is ready (starts nothing)"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("components", nargs="*", help=names_help)
        sub.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds")
    for name, text in (("down", "stop the stack"), ("status", "one line per component")):
        commands.add_parser(name, help=text).add_argument("components", nargs="*", help=names_help)
    logs = commands.add_parser("logs", help="tail the logs (.local/logs/)")
    logs.add_argument("components", nargs="*", help=names_help)
    logs.add_argument("-f", "--follow", action="store_true", help="keep following")
    logs.add_argument("-n", "--lines", type=int, default=40, help="lines per log")
    commands.add_parser("env", help="KEY=value settings that point services at the stack")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "setup":
        from deploy.local.provision import setup

        setup(report=_say)
    elif args.command == "up":
        stack.up(args.components, timeout_s=args.timeout, report=_say)
    elif args.command == "down":
        stack.down(args.components, report=_say)
    elif args.command == "wait":
        stack.wait(args.components, timeout_s=args.timeout)
        _say("local stack ready")
    elif args.command == "status":
        states = stack.status(args.components)
        for component in states:
            _say(component.line())
        return 0 if all(c.state == "running" for c in states) else 3
    elif args.command == "logs":
        files = [str(p) for p in stack.log_files(args.components) if p.exists()]
        if not files:
            raise StackError("no logs yet; `make up` writes them to .local/logs/")
        argv = ["tail", "-n", str(args.lines), *(["-F"] if args.follow else []), *files]
        os.execvp("tail", argv)
    elif args.command == "env":
        for line in stack.env_lines():
            _say(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # aiokafka logs every refused connection while Kafka boots; the launcher reports itself.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return _run(args)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted; what was started keeps running (`make status`, `make down`)",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        if os.environ.get("LOCAL_STACK_DEBUG"):
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (LOCAL_STACK_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())

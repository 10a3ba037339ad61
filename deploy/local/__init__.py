"""Local infrastructure launcher: Redis, Kafka (KRaft) and two FerretDB shards as processes.

The same launcher serves `make up`/`make run`, the test fixtures and the
benchmarks. Command line: `python -m deploy.local {setup,up,down,status,wait,logs,env}`
(see deploy/local/__main__.py). From Python:

    from deploy.local import ensure_running
    endpoints = ensure_running()   # starts what is missing, waits until ready
    endpoints.kafka_bootstrap, endpoints.redis_url, endpoints.mongo_shards

Modules: stack (components, up/down/status/wait), processes (pidfiles, ports),
provision (setup: apt, mvn, go build).
"""

from deploy.local.stack import (
    ComponentStatus,
    Endpoints,
    StackConfig,
    StackError,
    down,
    endpoints,
    ensure_running,
    ensure_running_async,
    status,
    up,
    wait,
)

__all__ = [
    "ComponentStatus",
    "Endpoints",
    "StackConfig",
    "StackError",
    "down",
    "endpoints",
    "ensure_running",
    "ensure_running_async",
    "status",
    "up",
    "wait",
]

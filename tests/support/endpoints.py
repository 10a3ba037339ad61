"""Where the infrastructure under test listens: the environment `make test` (and
deploy.local's ensure_running) exports, else the local stack's defaults.

Read at call time, not import time, so a stack on moved ports (LOCAL_PORT_OFFSET)
is the one the tests talk to.
"""

from __future__ import annotations

import os

from libs.media.settings import LOCAL_S3_ENDPOINT
from libs.settings import LOCAL_KAFKA, LOCAL_MONGO_SHARDS, LOCAL_REDIS


def kafka() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", LOCAL_KAFKA)


def redis_url() -> str:
    return os.environ.get("REDIS_URL", LOCAL_REDIS)


def mongo_shards() -> tuple[str, ...]:
    raw = os.environ.get("MONGO_SHARDS")
    if not raw:
        return LOCAL_MONGO_SHARDS
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def s3_endpoint() -> str:
    return os.environ.get("S3_ENDPOINT_URL", LOCAL_S3_ENDPOINT)

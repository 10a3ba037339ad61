"""Lua scripts run inside Redis pipelines by EVALSHA alone.

redis-py's `Script`, called on a pipeline, makes every `execute()` first send
SCRIPT EXISTS for the pipeline's scripts: one more round trip on every pipeline
that holds a script, on hot paths such as message_service's cache write before
each send's reply. Redis keeps loaded scripts until it restarts or is told to
SCRIPT FLUSH, so asking every time buys nothing.

`run_pipeline` sends the EVALSHAs as they are. If Redis has lost a script (it
answers NOSCRIPT), it loads the pipeline's scripts and builds and runs the whole
pipeline once more. A refused EVALSHA ran nothing, so the scripts run once; the
pipeline's other commands ran the first time and run again, so they must be
idempotent (setting, adding to sets, trimming, removing).

Users: the send path's cache write (libs/readmodels/messages.py RecentCache) and
delivery_service's inbox touch per conversation event (delivery_service/inbox.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A Lua script, called by its SHA1 in pipelines (`queue`) and loaded on NOSCRIPT."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())

    def queue(self, pipe: Pipeline, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Add one call of the script to `pipe`."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)


async def run_pipeline(
    redis: Redis, build: Callable[[Pipeline], None], scripts: Sequence[LuaScript]
) -> list[Any]:
    """Build a non-transactional pipeline with `build`, run it and return its replies;
    once more after loading `scripts` if Redis did not know one of them."""
    try:
        return await _run(redis, build)
    except NoScriptError:
        for script in scripts:
            await redis.script_load(script.source)
        return await _run(redis, build)


async def _run(redis: Redis, build: Callable[[Pipeline], None]) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        build(pipe)
        return await pipe.execute()

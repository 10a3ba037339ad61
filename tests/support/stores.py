"""Test helpers for the local Redis and store: a throwaway set of shard databases,
and a count of the commands in each Redis pipeline sent."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio.client import Pipeline

from libs.settings import ServiceSettings
from libs.storage.mongo import CollectionSpec, MongoShards, bootstrap_collections, open_shards


@asynccontextmanager
async def scratch_shards(
    prefix: str, specs: Sequence[CollectionSpec]
) -> AsyncIterator[MongoShards]:
    """Databases `<prefix>_<random>` on every local shard, with `specs` made; dropped after."""
    settings = ServiceSettings()
    shards = open_shards(
        settings.mongo_shards, f"{prefix}_{secrets.token_hex(4)}", settings.mongo_shards_sql
    )
    await bootstrap_collections(shards, specs)
    try:
        yield shards
    finally:
        for client, database in zip(shards.clients, shards.databases, strict=True):
            await client.drop_database(database.name)
        await shards.close()


def count_pipelines(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, the number of commands in each Redis pipeline sent (appended)."""
    sent: list[int] = []
    original = Pipeline._execute_pipeline

    async def counting(self: Pipeline, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        sent.append(len(commands))
        return await original(self, connection, commands, raise_on_error)

    monkeypatch.setattr(Pipeline, "_execute_pipeline", counting)
    return sent

"""The MongoDB shards a service talks to, and the bootstrap of their collections.

`MongoShards` owns one AsyncMongoClient per MONGO_SHARDS entry (opened in
`open_shards`, closed in `close`), routes a receiver to its shard's database, and
checks liveness. `bootstrap_collections` creates each declared collection's
indexes on every shard; where a shard is a mongos of a native sharded cluster it
also enables sharding and shards the collection on its declared key, so that the
same code runs on one FerretDB process or on a MongoDB sharded cluster.

Locally each shard is FerretDB v1 on PostgreSQL, which pushes down top-level
equality only and can serve it from an index only when the index is a GIN
expression index made in PostgreSQL (libs/storage/sqlindexes.py): a spec's
`lookups` names those fields, made where MONGO_SHARDS_SQL is set. Every read of
the services is equality on a lookup field over a bounded set; see docs/storage.md.

`bulk_update` is the one way to send many update statements: FerretDB v1.24
keeps every statement's query open until the whole `update` command ends (a
`defer` inside its loop over statements, internal/handler/msg_update.go) and
its SQLite pool allows 100 connections per database, so one command of 100
statements, or a few concurrent ones adding up to it, wait forever on their
own connections and wedge that database. Commands of at most
`UPDATE_STATEMENTS_PER_COMMAND` statements, sent one after another, cannot.
`delete_ids` deletes a set of documents the same way: one `_id` equality per
statement (pushed down and served by the `_id` lookup), never `{_id: {$in: ...}}`,
which FerretDB does not push down and answers by scanning the collection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient, DeleteOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import CollectionInvalid, OperationFailure, PyMongoError

from libs.logging import get_logger
from libs.storage.routing import ShardRouter

log = get_logger(__name__)
#: The server's error code for creating a collection that exists.
NAMESPACE_EXISTS = 48

IndexKeys = list[tuple[str, int | str]]

#: Update statements per `update` command (see the module docstring): a quarter of
#: FerretDB's per-database pool, so a few writers at once stay well clear of it.
UPDATE_STATEMENTS_PER_COMMAND = 25


async def bulk_update(
    collection: AsyncCollection[dict[str, Any]],
    operations: Sequence[UpdateOne],
    *,
    per_command: int = UPDATE_STATEMENTS_PER_COMMAND,
) -> None:
    """Unordered updates in commands of at most `per_command` statements, in sequence."""
    for start in range(0, len(operations), per_command):
        await collection.bulk_write(list(operations[start : start + per_command]), ordered=False)


async def delete_ids(
    collection: AsyncCollection[dict[str, Any]],
    ids: Sequence[str],
    *,
    per_command: int = UPDATE_STATEMENTS_PER_COMMAND,
) -> int:
    """Delete the documents with these `_id`s, one equality statement each (no scan),
    in commands of at most `per_command` statements; returns how many were deleted."""
    deleted = 0
    for start in range(0, len(ids), per_command):
        chunk = ids[start : start + per_command]
        result = await collection.bulk_write([DeleteOne({"_id": i}) for i in chunk], ordered=False)
        deleted += result.deleted_count
    return deleted


@dataclass(frozen=True)
class IndexSpec:
    keys: IndexKeys
    name: str
    unique: bool = False


@dataclass(frozen=True)
class CollectionSpec:
    """A collection a service owns: its indexes and, on a native cluster, its shard key."""

    name: str
    indexes: tuple[IndexSpec, ...] = ()
    #: Shard key on a mongos, e.g. {"receiver_id": "hashed"}; None keeps it unsharded.
    shard_key: dict[str, Any] | None = None
    #: Top-level fields the owner queries by equality (and only so); on FerretDB over
    #: PostgreSQL each gets a GIN expression index (libs/storage/sqlindexes.py). On
    #: MongoDB `indexes` must serve the same queries.
    lookups: tuple[str, ...] = ("_id",)
    #: Whether the non-unique `indexes` are made on FerretDB too. They serve nothing
    #: there (FerretDB's btree indexes cannot serve its own `@>` pushdown) and cost
    #: every insert, so only unique ones (which enforce) are made where
    #: MONGO_SHARDS_SQL is set.
    native_only_indexes: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class MongoShards:
    """One client and database per shard, and the router over them."""

    def __init__(
        self,
        uris: Sequence[str],
        database: str,
        *,
        server_selection_timeout_ms: int = 5000,
        socket_timeout_ms: int = 30_000,
        sql_urls: Sequence[str] = (),
        event_listeners: Sequence[Any] = (),
    ) -> None:
        self.uris = tuple(uris)
        #: PostgreSQL under each shard (FerretDB on PostgreSQL), or () on MongoDB.
        self.sql_urls = tuple(sql_urls)
        self.clients: tuple[AsyncMongoClient[dict[str, Any]], ...] = tuple(
            AsyncMongoClient(
                uri,
                serverSelectionTimeoutMS=server_selection_timeout_ms,
                connectTimeoutMS=server_selection_timeout_ms,
                # A shard that stops answering (seen with FerretDB under load) must
                # fail the call, so the batch is retried, rather than hang it forever.
                socketTimeoutMS=socket_timeout_ms,
                tz_aware=True,
                uuidRepresentation="standard",
                event_listeners=list(event_listeners),
            )
            for uri in self.uris
        )
        self.databases: tuple[AsyncDatabase[dict[str, Any]], ...] = tuple(
            client[database] for client in self.clients
        )
        self.router: ShardRouter[AsyncDatabase[dict[str, Any]]] = ShardRouter(self.databases)

    def __len__(self) -> int:
        return len(self.databases)

    def database_for(self, routing_key: str) -> AsyncDatabase[dict[str, Any]]:
        return self.router.shard_for(routing_key)

    def collection_for(self, routing_key: str, name: str) -> AsyncCollection[dict[str, Any]]:
        """The collection `name` on the shard that owns `routing_key`."""
        return self.router.shard_for(routing_key)[name]

    def shard_index(self, routing_key: str) -> int:
        return self.router.index_for(routing_key)

    def collections(self, name: str) -> list[AsyncCollection[dict[str, Any]]]:
        """`name` on every shard, in shard order (for scatter-gather reads)."""
        return [database[name] for database in self.databases]

    async def ping(self, timeout_s: float = 2.0) -> list[bool]:
        """Whether each shard answers a ping within `timeout_s`."""

        async def one(client: AsyncMongoClient[dict[str, Any]]) -> bool:
            try:
                await asyncio.wait_for(client.admin.command("ping"), timeout_s)
                return True
            except (PyMongoError, TimeoutError, OSError):
                return False

        return list(await asyncio.gather(*(one(c) for c in self.clients)))

    async def close(self) -> None:
        await asyncio.gather(*(client.close() for client in self.clients))


def open_shards(uris: Sequence[str], database: str, sql_urls: Sequence[str] = ()) -> MongoShards:
    """The one place a service opens its MongoDB clients (connections are lazy)."""
    return MongoShards(uris, database, sql_urls=sql_urls)


async def _is_mongos(client: AsyncMongoClient[dict[str, Any]]) -> bool:
    hello = await client.admin.command("hello")
    return hello.get("msg") == "isdbgrid"


async def bootstrap_collections(shards: MongoShards, specs: Sequence[CollectionSpec]) -> None:
    """Create indexes (and, on a mongos, native sharding) for `specs` on every shard.

    Idempotent: creating an index that exists with the same options is a no-op.
    On FerretDB over PostgreSQL (`shards.sql_urls`) the lookup indexes are made too.
    """
    for index_, (client, database) in enumerate(zip(shards.clients, shards.databases, strict=True)):
        sql_url = shards.sql_urls[index_] if shards.sql_urls else None
        mongos = await _is_mongos(client)
        if mongos:
            try:
                await client.admin.command("enableSharding", database.name)
            except OperationFailure as exc:
                if exc.code not in (23,):  # 23: AlreadyInitialized
                    raise
        existing = set(await database.list_collection_names())
        for spec in specs:
            collection = database[spec.name]
            if spec.name not in existing:
                # A concurrent bootstrap (another service) may have made it meanwhile:
                # pymongo's own check says CollectionInvalid, the server's answer to a
                # create that lost the race is NamespaceExists (48).
                try:
                    await database.create_collection(spec.name)
                except CollectionInvalid:
                    pass
                except OperationFailure as exc:
                    if exc.code != NAMESPACE_EXISTS:
                        raise
            for index in spec.indexes:
                if sql_url and spec.native_only_indexes and not index.unique:
                    continue
                await collection.create_index(index.keys, name=index.name, unique=index.unique)
            if mongos and spec.shard_key:
                try:
                    await client.admin.command(
                        "shardCollection", f"{database.name}.{spec.name}", key=spec.shard_key
                    )
                except OperationFailure as exc:
                    if "already" not in str(exc).lower():
                        raise
        if sql_url:
            from libs.storage.sqlindexes import ensure_lookup_indexes

            await ensure_lookup_indexes(sql_url, database.name, specs)
        log.info(
            "collections bootstrapped",
            database=database.name,
            mongos=mongos,
            collections=[s.name for s in specs],
        )

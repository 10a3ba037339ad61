"""Expression indexes under FerretDB's PostgreSQL backend: what makes its pushdown fast.

FerretDB v1.24 on PostgreSQL stores a collection as a table with one `_jsonb`
column and pushes a top-level equality `{field: value}` down as
`_jsonb->'field' @> value` (internal/backends/postgresql/query.go). The btree
expression indexes that its createIndexes makes cannot serve `@>`, so every such
query scans the table; a GIN index on the same expression can
(`jsonb_path_ops`, the smaller of the two jsonb operator classes, supports `@>`).
Ranges, `$in`, `$or`, sort and limit are never pushed down (FerretDB filters,
sorts and limits the pushed-down rows in Go), so the services query by
equality on these fields only, over sets they keep bounded (docs/storage.md).

`ensure_lookup_indexes` makes one such index per (collection, field) declared
in a CollectionSpec's `lookups`, in the schema FerretDB uses for the database,
on the table its metadata names. The PostgreSQL server runs with
`plan_cache_mode=force_custom_plan` (deploy/local): FerretDB passes the field
name as a query parameter, and only a plan made with the parameter's value
matches the index expression. This module is used only where MONGO_SHARDS_SQL
is set (the local stack); a real MongoDB uses the CollectionSpec's own indexes.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from libs.logging import get_logger

if TYPE_CHECKING:
    from libs.storage.mongo import CollectionSpec

log = get_logger(__name__)

#: FerretDB's per-database metadata table (internal/backends/postgresql/metadata).
METADATA_TABLE = "_ferretdb_database_metadata"


def lookup_index_name(table: str, field: str) -> str:
    """A PostgreSQL identifier (<= 63 bytes) for the lookup index of `field` on `table`."""
    digest = hashlib.blake2b(f"{table}.{field}".encode(), digest_size=4).hexdigest()
    return f"{table[:40]}_{digest}_lookup"


def lookup_index_sql(schema: str, table: str, field: str) -> str:
    """The CREATE INDEX that serves FerretDB's `_jsonb->'field' @> value`."""
    literal = field.replace("'", "''")
    return (
        f'CREATE INDEX IF NOT EXISTS "{lookup_index_name(table, field)}" '
        f'ON "{schema}"."{table}" USING gin ((_jsonb->\'{literal}\') jsonb_path_ops) '
        # Without the pending list a lookup never scans unmerged entries.
        "WITH (fastupdate = off)"
    )


async def table_of(connection: object, schema: str, collection: str) -> str | None:
    """The PostgreSQL table FerretDB keeps `collection` of database `schema` in."""
    row = await connection.fetchrow(  # type: ignore[attr-defined]
        f'SELECT _jsonb->>\'table\' AS "table" FROM "{schema}"."{METADATA_TABLE}" '
        "WHERE _jsonb->>'_id' = $1",
        collection,
    )
    return None if row is None else str(row["table"])


async def ensure_lookup_indexes(sql_url: str, schema: str, specs: Sequence[CollectionSpec]) -> None:
    """Create the GIN lookup index of every declared lookup field (idempotent).

    Each collection must exist already (bootstrap_collections creates it first).
    """
    import asyncpg

    connection = await asyncpg.connect(sql_url, timeout=10)
    try:
        for spec in specs:
            if not spec.lookups:
                continue
            table = await table_of(connection, schema, spec.name)
            if table is None:
                raise RuntimeError(f"FerretDB has no table for {schema}.{spec.name}")
            for field in spec.lookups:
                # Concurrent bootstraps of two services may race on the same index.
                with contextlib.suppress(asyncpg.UniqueViolationError, asyncpg.DuplicateTableError):
                    await connection.execute(lookup_index_sql(schema, table, field))
        log.info("lookup indexes ensured", schema=schema, collections=[s.name for s in specs])
    finally:
        await connection.close()

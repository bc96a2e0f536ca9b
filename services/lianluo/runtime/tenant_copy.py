"""One tenant's rows, copied from one cell's database to another's: the data of a tenant that
moves between cells.

Every service keeps its tables in its own schema of the cell's database, and every table that
holds a tenant's data has a `tenant_id` column: those rows are the tenant, its configuration,
people and keys as much as its open conversations, queued contacts and recordings. Each row is
read as JSON (`to_jsonb`) and written back through `jsonb_populate_recordset`, so Postgres
itself converts every type both ways, whatever a service's tables hold. Columns the database
computes (generated) are left to it; serial counters are moved past what was copied. Tables
come in foreign-key order.

The source is read in one snapshot and the target written in one transaction: a copy that fails
leaves nothing in the target. Both databases must be at the same migrations, and the target
must hold nothing of the tenant yet; otherwise the copy is refused before anything is written.
The outbox and the inbox are not copied: they are the source cell's events, published (and
applied) there before the tenant leaves.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass

import asyncpg

# The runtime's own tables of each schema: each cell publishes and applies its own events.
NOT_COPIED = frozenset({"outbox", "inbox", "schema_migrations"})
BATCH_ROWS = 500


class CopyRefused(Exception):
    """The copy cannot be made; nothing was written."""


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    # The columns written (generated ones are the database's), and those a sequence feeds.
    columns: tuple[str, ...]
    serial: tuple[str, ...]
    # The type of its tenant_id column (uuid in most tables, text in some).
    tenant_type: str = "uuid"

    @property
    def qualified(self) -> str:
        return f'"{self.schema}"."{self.name}"'

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def of_tenant(self) -> str:
        """The condition on the tenant's rows, its id in $1 (as the column's own type, so
        that the column's indexes serve)."""
        return f'tenant_id = $1::"{self.tenant_type}"'


async def tenant_tables(conn: asyncpg.Connection) -> list[Table]:
    """The tables that hold tenants' rows, each after the tables its foreign keys name."""
    rows = await conn.fetch(
        """
        select c.table_schema as schema, c.table_name as name,
               array_agg(c.column_name::text order by c.ordinal_position)
                   filter (where c.is_generated = 'NEVER') as columns,
               array_agg(c.column_name::text order by c.ordinal_position)
                   filter (where c.column_default like 'nextval(%') as serial,
               max(c.udt_name::text) filter (where c.column_name = 'tenant_id') as tenant_type
        from information_schema.columns c
        join information_schema.tables t
          on t.table_schema = c.table_schema and t.table_name = c.table_name
         and t.table_type = 'BASE TABLE'
        where c.table_schema not in ('pg_catalog', 'information_schema')
        group by c.table_schema, c.table_name
        having bool_or(c.column_name = 'tenant_id')
        """
    )
    tables = {
        f"{r['schema']}.{r['name']}": Table(
            r["schema"],
            r["name"],
            tuple(r["columns"] or ()),
            tuple(r["serial"] or ()),
            r["tenant_type"],
        )
        for r in rows
        if r["name"] not in NOT_COPIED
    }
    edges = await conn.fetch(
        """
        select n1.nspname || '.' || c1.relname as child, n2.nspname || '.' || c2.relname as parent
        from pg_constraint k
        join pg_class c1 on c1.oid = k.conrelid join pg_namespace n1 on n1.oid = c1.relnamespace
        join pg_class c2 on c2.oid = k.confrelid join pg_namespace n2 on n2.oid = c2.relnamespace
        where k.contype = 'f'
        """
    )
    order: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for key in sorted(tables):
        order.add(key)
    for edge in edges:
        if edge["child"] in tables and edge["parent"] in tables:
            order.add(edge["child"], edge["parent"])
    return [tables[key] for key in order.static_order()]


async def _migrations(conn: asyncpg.Connection) -> set[tuple[str, str, int]]:
    """Every migration applied, in every schema: (schema, component, version)."""
    found: set[tuple[str, str, int]] = set()
    schemas = await conn.fetch(
        "select table_schema from information_schema.tables where table_name = 'schema_migrations'"
    )
    for row in schemas:
        schema = row["table_schema"]
        applied = await conn.fetch(
            f'select component, version from "{schema}".schema_migrations'  # noqa: S608
        )
        found |= {(schema, a["component"], a["version"]) for a in applied}
    return found


async def copy_tenant(
    source: asyncpg.Connection, target: asyncpg.Connection, tenant_id: str
) -> dict[str, int]:
    """Copy every row of `tenant_id` from the source cell's database to the target's; the
    rows copied, by table ("schema.table")."""
    mine, theirs = await _migrations(source), await _migrations(target)
    if mine != theirs:
        differ = sorted({f"{s}/{c} {v}" for s, c, v in mine ^ theirs})[:5]
        raise CopyRefused(f"the two databases are not at the same migrations: {differ}")
    tables = await tenant_tables(source)
    copied: dict[str, int] = {}
    async with (
        source.transaction(isolation="repeatable_read", readonly=True),
        target.transaction(),
    ):
        held = await _held(target, tables, tenant_id)
        if held is not None:
            raise CopyRefused(f"the target already has rows of the tenant in {held.key}")
        for table in tables:
            copied[table.key] = await _copy_table(source, target, table, tenant_id)
    return copied


async def _held(conn: asyncpg.Connection, tables: list[Table], tenant_id: str) -> Table | None:
    """The first table that holds a row of the tenant, if any."""
    for table in tables:
        query = f"select exists (select from {table.qualified} where {table.of_tenant})"  # noqa: S608
        if await conn.fetchval(query, tenant_id):
            return table
    return None


async def has_rows(conn: asyncpg.Connection, tenant_id: str) -> bool:
    """Whether the database holds anything of the tenant."""
    return await _held(conn, await tenant_tables(conn), tenant_id) is not None


async def remove_tenant(conn: asyncpg.Connection, tenant_id: str) -> dict[str, int]:
    """Delete every row of the tenant (a tenant that moved away), in one transaction, each
    table before those its foreign keys name; the rows deleted, by table."""
    removed: dict[str, int] = {}
    async with conn.transaction():
        for table in reversed(await tenant_tables(conn)):
            status = await conn.execute(
                f"delete from {table.qualified} where {table.of_tenant}",  # noqa: S608
                tenant_id,
            )
            removed[table.key] = int(status.split()[-1])
    return removed


async def _copy_table(
    source: asyncpg.Connection, target: asyncpg.Connection, table: Table, tenant_id: str
) -> int:
    columns = ", ".join(f'"{c}"' for c in table.columns)
    insert = (
        f"insert into {table.qualified} ({columns}) select {columns} "  # noqa: S608
        f"from jsonb_populate_recordset(null::{table.qualified}, $1::jsonb)"
    )
    read = f"select to_jsonb(t)::text from {table.qualified} t where {table.of_tenant}"  # noqa: S608
    count = 0
    batch: list[str] = []
    async for row in source.cursor(read, tenant_id):
        batch.append(row[0])
        if len(batch) == BATCH_ROWS:
            await target.execute(insert, "[" + ",".join(batch) + "]")
            count += len(batch)
            batch.clear()
    if batch:
        await target.execute(insert, "[" + ",".join(batch) + "]")
        count += len(batch)
    for column in table.serial:
        # The target's own next rows come after the copied ones.
        await target.execute(
            f'select setval(q.s, greatest((select max("{column}") from {table.qualified}), '  # noqa: S608
            "pg_sequence_last_value(q.s), 1)) "
            "from (select pg_get_serial_sequence($1, $2)::regclass as s) q",
            table.qualified,
            column,
        )
    return count

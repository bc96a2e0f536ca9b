"""Forward-only migrations on the real Postgres: applied once, in order, never edited."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest
from conftest import Stack

from lianluo.runtime import postgres

pytestmark = pytest.mark.integration


def _schema() -> str:
    return f"m_{uuid.uuid4().hex[:10]}"


async def test_replicas_starting_together_apply_each_migration_once(
    stack: Stack, tmp_path: Path
) -> None:
    (tmp_path / "0001_things.sql").write_text("create table things (id int primary key);")
    (tmp_path / "0002_more.sql").write_text("alter table things add column name text;")
    schema = _schema()
    results = await asyncio.gather(
        *[postgres.migrate_dsn(stack.database_url, schema, {"svc": tmp_path}) for _ in range(3)]
    )
    applied = sorted(name for result in results for name in result)
    assert applied == ["runtime/0001_outbox_inbox", "svc/0001_things", "svc/0002_more"]
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute(f"insert into {schema}.things (id, name) values (1, 'a')")
        rows = await conn.fetch(f"select component, version from {schema}.schema_migrations")
    finally:
        await conn.close()
    assert sorted((r["component"], r["version"]) for r in rows) == [
        ("runtime", 1),
        ("svc", 1),
        ("svc", 2),
    ]
    assert await postgres.migrate_dsn(stack.database_url, schema, {"svc": tmp_path}) == []


async def test_an_applied_migration_that_was_edited_is_refused(
    stack: Stack, tmp_path: Path
) -> None:
    migration = tmp_path / "0001_things.sql"
    migration.write_text("create table things (id int primary key);")
    schema = _schema()
    await postgres.migrate_dsn(stack.database_url, schema, {"svc": tmp_path})
    migration.write_text("create table things (id bigint primary key);")
    with pytest.raises(postgres.MigrationError, match="changed after it was applied"):
        await postgres.migrate_dsn(stack.database_url, schema, {"svc": tmp_path})


async def test_a_failing_migration_leaves_nothing_half_applied(
    stack: Stack, tmp_path: Path
) -> None:
    (tmp_path / "0001_broken.sql").write_text(
        "create table half (id int); insert into nowhere values (1);"
    )
    schema = _schema()
    with pytest.raises(asyncpg.UndefinedTableError):
        await postgres.migrate_dsn(stack.database_url, schema, {"svc": tmp_path})
    conn = await asyncpg.connect(stack.database_url)
    try:
        exists = await conn.fetchval("select to_regclass($1)", f"{schema}.half")
        recorded = await conn.fetchval(
            f"select count(*) from {schema}.schema_migrations where component = 'svc'"
        )
    finally:
        await conn.close()
    assert exists is None
    assert recorded == 0

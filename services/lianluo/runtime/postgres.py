"""The asyncpg pool of a service's schema, and forward-only SQL migrations."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from lianluo.runtime.logs import get_logger

log = get_logger(__name__)

RUNTIME_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class MigrationError(RuntimeError):
    """A migration folder or an applied migration is not as it must be."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(
    dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10, wait_seconds: float = 30
) -> asyncpg.Pool:
    """A pool whose connections see only `schema` (search_path), retried while Postgres starts."""
    _check_schema(schema)
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(wait_seconds),
        wait=wait_exponential(multiplier=0.2, max=2),
        retry=retry_if_exception_type((OSError, asyncpg.CannotConnectNowError)),
        reraise=True,
    ):
        with attempt:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                server_settings={"search_path": schema, "application_name": f"lianluo-{schema}"},
            )
    return pool


@dataclass(frozen=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(component: str, folder: Path) -> list[Migration]:
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION_NAME.fullmatch(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNNN_snake_case.sql")
        found.append(Migration(component, int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{folder}: two migrations share a version number")
    return found


async def migrate(conn: asyncpg.Connection, schema: str, folders: dict[str, Path]) -> list[str]:
    """Apply pending migrations of each component into `schema`; return the names applied.

    The runtime's own tables (outbox, inbox) come first. An advisory lock serialises replicas
    that start together; a migration edited after it was applied is refused.
    """
    _check_schema(schema)
    applied_now: list[str] = []
    await conn.execute("select pg_advisory_lock(hashtext($1))", f"lianluo.migrate.{schema}")
    try:
        await conn.execute(f"create schema if not exists {schema}")
        await conn.execute(
            f"""create table if not exists {schema}.schema_migrations (
                component text not null, version int not null, name text not null,
                checksum text not null, applied_at timestamptz not null default now(),
                primary key (component, version))"""
        )
        rows = await conn.fetch(
            f"select component, version, checksum from {schema}.schema_migrations"  # noqa: S608
        )
        done = {(r["component"], r["version"]): r["checksum"] for r in rows}
        for component, folder in {"runtime": RUNTIME_MIGRATIONS, **folders}.items():
            for m in load_migrations(component, folder):
                previous = done.get((component, m.version))
                if previous is not None:
                    if previous != m.checksum:
                        raise MigrationError(
                            f"{schema}: {component} migration {m.name} changed after it was "
                            "applied; add a new migration instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(f"set local search_path to {schema}")
                    await conn.execute(m.sql)
                    await conn.execute(
                        f"insert into {schema}.schema_migrations (component, version, name, "  # noqa: S608
                        "checksum) values ($1, $2, $3, $4)",
                        component,
                        m.version,
                        m.name,
                        m.checksum,
                    )
                applied_now.append(f"{component}/{m.name}")
                log.info("migration applied", schema=schema, migration=f"{component}/{m.name}")
    finally:
        await conn.execute("select pg_advisory_unlock(hashtext($1))", f"lianluo.migrate.{schema}")
    return applied_now


async def migrate_dsn(dsn: str, schema: str, folders: dict[str, Path]) -> list[str]:
    conn: Any = await asyncpg.connect(dsn)
    try:
        return await migrate(conn, schema, folders)
    finally:
        await conn.close()


def _check_schema(schema: str) -> None:
    # Schema names are interpolated into DDL, so only plain identifiers are accepted.
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"invalid schema name {schema!r}")

"""What a tenant's move between cells spends copying its rows (lianluo.runtime.tenant_copy):
rows per second from one cell's database to another's, through `to_jsonb` and
`jsonb_populate_recordset`, next to the raw limit measured in the same run: Postgres's own
binary COPY of the same rows out of the source and into a third database (no JSON, no type
conversion, nothing to check).

The tenant has `--rows` audit entries and a tenth of that in configuration resources (JSON
specs), and another tenant as many rows again, which stay where they are.

Run:
    .venv/bin/python loadtest/bench/tenant_copy.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import io
import time
import uuid

import asyncpg
from common import progress, summary

from lianluo.devstack import infra
from lianluo.runtime import postgres
from lianluo.runtime.tenant_copy import copy_tenant, tenant_tables
from lianluo.services import CELL_SERVICES


async def migrated(admin_url: str, name: str) -> str:
    """A fresh database with every cell service's schema."""
    infra.create_database(admin_url, name, fresh=True)
    url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
    for service in CELL_SERVICES:
        spec = importlib.import_module(f"lianluo.services.{service}.app").SPEC
        own = {spec.name: spec.migrations} if spec.migrations is not None else {}
        await postgres.migrate_dsn(url, spec.name, own)
    return url


async def seed(url: str, tenant_id: str, rows: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "insert into tenants.audit_log (tenant_id, api_key_id, method, peer, kind, "
            "resource_id, revision, deleted) select $1::uuid, 'key-' || n, "
            "'/lianluo.tenants.v1.AgentService/UpdateAgent', 'ipv4:10.0.0.7:51234', 'agent', "
            "gen_random_uuid()::text, n, false from generate_series(1, $2) n",
            tenant_id,
            rows,
        )
        await conn.execute(
            "insert into tenants.resources (tenant_id, kind, id, name, revision, spec) "
            "select $1::uuid, 'agent', gen_random_uuid(), 'agent.' || n, 1, "
            "jsonb_build_object('name', 'agent.' || n, 'display_name', 'Agent ' || n, "
            "'skills', jsonb_build_array(jsonb_build_object('skill', 'cards', 'level', 7)), "
            "'languages', jsonb_build_array('en', 'zh-CN')) from generate_series(1, $2) n",
            tenant_id,
            rows // 10,
        )
    finally:
        await conn.close()


async def raw_copy(source_url: str, target_url: str, tenant_id: str) -> int:
    """Postgres's binary COPY of the tenant's rows, table by table, in one transaction."""
    source, target = await asyncpg.connect(source_url), await asyncpg.connect(target_url)
    copied = 0
    try:
        async with target.transaction():
            for table in await tenant_tables(source):
                columns = ", ".join(f'"{c}"' for c in table.columns)
                buffer = io.BytesIO()
                await source.copy_from_query(
                    f"select {columns} from {table.qualified} where {table.of_tenant}",  # noqa: S608
                    tenant_id,
                    output=buffer,
                    format="binary",
                )
                buffer.seek(0)
                status = await target.copy_to_table(
                    table.name,
                    schema_name=table.schema,
                    source=buffer,
                    columns=list(table.columns),
                    format="binary",
                )
                copied += int(status.split()[-1])
    finally:
        await source.close()
        await target.close()
    return copied


async def run(rows: int) -> None:
    config = infra.StackConfig.from_env()
    label = uuid.uuid4().hex[:8]
    progress("migrating three databases")
    source_url = await migrated(config.database_url, f"bench_copy_src_{label}")
    target_url = await migrated(config.database_url, f"bench_copy_dst_{label}")
    raw_url = await migrated(config.database_url, f"bench_copy_raw_{label}")
    tenant_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    progress(f"seeding {rows:,} audit entries and {rows // 10:,} resources per tenant")
    for each in (tenant_id, other):
        await seed(source_url, each, rows)

    progress("the raw limit: binary COPY out and in")
    started = time.perf_counter()
    raw_rows = await raw_copy(source_url, raw_url, tenant_id)
    raw_seconds = time.perf_counter() - started

    progress("the tenant copy")
    source, target = await asyncpg.connect(source_url), await asyncpg.connect(target_url)
    try:
        started = time.perf_counter()
        copied = sum((await copy_tenant(source, target, tenant_id)).values())
        seconds = time.perf_counter() - started
    finally:
        await source.close()
        await target.close()
    assert copied == raw_rows, (copied, raw_rows)
    summary(
        f"Copying one tenant between two cells' databases ({copied:,} rows)",
        [
            (
                "rows per second",
                f"{copied / seconds:,.0f} ({seconds:.1f} s)",
                f"{raw_rows / raw_seconds:,.0f} ({raw_seconds:.1f} s)",
                f"{(copied / seconds) / (raw_rows / raw_seconds):.2f}",
                "",
            )
        ],
    )
    admin = await asyncpg.connect(config.database_url)
    for name in ("src", "dst", "raw"):
        await admin.execute(f'drop database if exists "bench_copy_{name}_{label}" with (force)')
    await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    config = infra.StackConfig.from_env()
    started = infra.up(config)
    try:
        asyncio.run(run(args.rows))
    finally:
        if started:
            infra.down(config, only=started)


if __name__ == "__main__":
    main()

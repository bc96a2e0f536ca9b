"""Tear a release's cells down completely: the chart's opt-in uninstall hook (`lianluo teardown`).

`helm uninstall` alone removes the chart's own objects and nothing the operator made: the
Tenants and Cells keep their finalizers with no operator left to release them, so they and the
cells' Deployments stay. Run while the operator still runs (a pre-delete hook does), this deletes
every Tenant (the operator deprovisions each from both tenants services), then every Cell (the
operator releases it, and its children go with it), and, when asked, drops the cells' databases
and their services' roles.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from lianluo.operator.kube import Kube
from lianluo.operator.template import SERVICES, database_name, role_name

Report = Callable[[str], None]


class TeardownError(Exception):
    """What is left when the teardown gives up: names, so a person can look."""


@dataclass(frozen=True)
class Databases:
    """Where the cells' databases live, to drop them: the operator's admin URL and prefix."""

    admin_url: str
    prefix: str


async def teardown(
    kube: Kube,
    namespace: str,
    databases: Databases | None,
    within: float,
    report: Report,
    every: float = 2.0,
) -> None:
    """Delete every Tenant, then every Cell, of `namespace`, waiting for the operator to finish
    each; then drop the cells' databases and roles when `databases` is given."""
    deadline = asyncio.get_running_loop().time() + within
    cells = [c["metadata"]["name"] for c in await kube.list("Cell", namespace)]
    for kind in ("Tenant", "Cell"):
        names = [o["metadata"]["name"] for o in await kube.list(kind, namespace)]
        report(f"deleting {len(names)} {kind.lower()}(s) in {namespace}")
        for name in names:
            await kube.delete(kind, namespace, name)
        while left := sorted(o["metadata"]["name"] for o in await kube.list(kind, namespace)):
            if asyncio.get_running_loop().time() > deadline:
                raise TeardownError(
                    f"{len(left)} {kind.lower()}(s) still there after {within:.0f}s: "
                    f"{', '.join(left)}; is the operator running? (`kubectl describe` shows why)"
                )
            report(f"waiting for the operator: {len(left)} {kind.lower()}(s) left")
            await asyncio.sleep(every)
    if databases is not None:
        for cell in cells:
            await drop_database(databases, cell)
            report(f"dropped the database and roles of {cell}")
    report("teardown complete")


async def drop_database(databases: Databases, cell: str) -> None:
    """Drop a cell's database (closing its connections) and its services' roles."""
    name = database_name(databases.prefix, cell)
    # The admin URL's own database: a database cannot be dropped from inside it.
    conn = await asyncpg.connect(databases.admin_url, timeout=10)
    try:
        # Names come from validated prefixes and cell names, never from free input.
        await conn.execute(f'drop database if exists "{name}" with (force)')
        for service in SERVICES:
            await conn.execute(f'drop role if exists "{role_name(name, service)}"')
    finally:
        await conn.close()

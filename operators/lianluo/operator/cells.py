"""Cell handlers: clone the template's children, compute readiness, refuse deletion while in use."""

from __future__ import annotations

from typing import Any, cast

import asyncpg
import kopf

from lianluo.operator import conditions as cond
from lianluo.operator.kube import ApiError, Obj
from lianluo.operator.runtime import CELL_ANNOTATION, GROUP, VERSION, Runtime, runtime
from lianluo.operator.template import (
    CELL_LABEL,
    MANAGED_BY,
    SERVICES,
    cell_children,
    database_name,
    database_secrets,
    database_url,
    migrate_job,
    role_name,
    role_password,
)

_RETRY = 5.0


def _selector(cell: str) -> str:
    return f"{CELL_LABEL}={cell},app.kubernetes.io/managed-by={MANAGED_BY}"


async def ensure_database(rt: Runtime, cell: str) -> str:
    """Create the cell's database if it is missing, with a role of its own for each service;
    return the database's name."""
    admin = rt.settings.database_admin_url.get_secret_value()
    name = database_name(rt.settings.database_prefix, cell)
    try:
        conn = await asyncpg.connect(admin, timeout=10)
        try:
            if not await conn.fetchval("select 1 from pg_database where datname = $1", name):
                # The name is built from a validated prefix and cell name, never from input.
                await conn.execute(f'create database "{name}"')
        except asyncpg.DuplicateDatabaseError:
            pass  # a concurrent attempt won; the database is there
        finally:
            await conn.close()
        conn = await asyncpg.connect(database_url(admin, name), timeout=10)
        try:
            await _grant_roles(conn, admin, name)
        finally:
            await conn.close()
    except ValueError as error:
        raise kopf.PermanentError(str(error)) from error
    except (OSError, asyncpg.PostgresError) as error:
        raise kopf.TemporaryError(
            f"cannot prepare database {name}: {error}", delay=_RETRY
        ) from error
    return name


async def _grant_roles(conn: asyncpg.Connection, admin_url: str, database: str) -> None:
    """Each service of the cell connects as its own role, which may use only its own schema's
    rows: no other service's schema, no DDL, no other database, no CREATE DATABASE. The
    migrate Job (the admin role) creates the tables; default privileges give the role the rows
    of every table it creates, now and after each upgrade.

    Identifiers come from validated names (role_name refuses what Postgres would truncate);
    the password is hex.
    """
    await conn.execute(f'revoke all on database "{database}" from public')
    for service in SERVICES:
        role = role_name(database, service)
        password = role_password(admin_url, role)
        try:
            await conn.execute(f"create role \"{role}\" login password '{password}'")
        except asyncpg.DuplicateObjectError:
            # Again at each reconcile: an admin credential changed since gives a new password.
            await conn.execute(f"alter role \"{role}\" login password '{password}'")
        schema = f'"{service}"'
        await conn.execute(
            f"""
            grant connect, temporary on database "{database}" to "{role}";
            create schema if not exists {schema};
            grant usage on schema {schema} to "{role}";
            grant select, insert, update, delete on all tables in schema {schema} to "{role}";
            grant usage, select, update on all sequences in schema {schema} to "{role}";
            alter default privileges in schema {schema}
                grant select, insert, update, delete on tables to "{role}";
            alter default privileges in schema {schema}
                grant usage, select, update on sequences to "{role}";
            """
        )


async def placed_tenants(rt: Runtime, namespace: str, cell: str) -> list[Obj]:
    tenants = await rt.kube.list("Tenant", namespace)
    return [t for t in tenants if t["metadata"].get("annotations", {}).get(CELL_ANNOTATION) == cell]


def _phase(body: Obj, ready: bool) -> str:
    if body["metadata"].get("deletionTimestamp"):
        return "Terminating"
    if ready:
        return "Ready"
    was_ready = cond.condition_true(body.get("status", {}).get("conditions", []), "Ready")
    return "Degraded" if was_ready else "Provisioning"


async def refresh(
    rt: Runtime, namespace: str, name: str, extra: dict[str, Any] | None = None
) -> Obj | None:
    """Recompute a cell's phase, load and conditions from its children and its tenants."""
    body = await rt.kube.get("Cell", namespace, name)
    if body is None:
        return None
    selector = _selector(name)
    deployments = await rt.kube.list("Deployment", namespace, selector)
    current = migrate_job(name, body["spec"], rt.template)["metadata"]["name"]
    # Only the current migrate Job counts (a superseded one may linger a moment).
    jobs = [j for j in await rt.kube.list("Job", namespace, selector)
            if j["metadata"]["name"] == current]  # fmt: skip
    ready, message = cond.cell_readiness(deployments, jobs, SERVICES)
    if not jobs:
        ready, message = False, f"no migrate Job yet ({current})"
    tenants = await placed_tenants(rt, namespace, name)
    sessions = sum(int(t["spec"]["expectedConcurrentSessions"]) for t in tenants)
    capacity = body["spec"]["capacity"]
    status = body.get("status") or {}
    conditions = cond.set_condition(
        status.get("conditions", []), "Available", ready,
        "AllServicesAvailable" if ready else "Waiting", message,
    )  # fmt: skip
    conditions = cond.set_condition(
        conditions, "Ready", ready, "Ready" if ready else "NotReady", message
    )
    phase = _phase(body, ready)
    new = {
        "phase": phase,
        "tenants": len(tenants),
        "tenantNames": sorted(t["metadata"]["name"] for t in tenants),
        "load": {
            "sessions": sessions,
            "sessionsPercent": 100 * sessions // capacity["maxSessions"],
            "tenantsPercent": 100 * len(tenants) // capacity["maxTenants"],
        },
        "conditions": conditions,
        # The cell's last migration: the Job of the image and settings it runs now.
        "migration": {
            "job": current,
            "image": rt.template.image,
            "complete": bool(jobs) and cond.job_complete(jobs[0]),
        },
    }
    if extra:
        new.update(extra)
    if any(status.get(k) != v for k, v in new.items()):
        body = await rt.kube.patch("Cell", namespace, name, {"status": new}, status=True)
        if phase != status.get("phase"):
            kind = "Warning" if phase == "Degraded" else "Normal"
            kopf.event(cast(kopf.Body, body), type=kind, reason=phase, message=message)
    return body


@kopf.on.create(GROUP, VERSION, "cells")
@kopf.on.resume(GROUP, VERSION, "cells")
@kopf.on.update(GROUP, VERSION, "cells", field="spec")
async def build_cell(name: str, namespace: str | None, spec: kopf.Spec, body: kopf.Body, memo: Any,
                     logger: kopf.Logger, **_: Any) -> None:  # fmt: skip
    """Create or update every child of the cell; safe to repeat at any point."""
    namespace = namespace or "default"
    rt = runtime(memo)
    database = await ensure_database(rt, name)
    admin = rt.settings.database_admin_url.get_secret_value()
    secrets = database_secrets(name, admin, database)
    children = [*secrets, *cell_children(name, dict(spec), rt.template)]
    kopf.adopt(children, owner=body)
    current = migrate_job(name, dict(spec), rt.template)["metadata"]["name"]
    try:
        for child in children:
            await rt.kube.apply(child["kind"], namespace, child)
        # The migrate Jobs of an earlier image or settings: superseded by the current one.
        for job in await rt.kube.list("Job", namespace, _selector(name)):
            if job["metadata"]["name"] != current:
                await rt.kube.delete("Job", namespace, job["metadata"]["name"])
    except ApiError as error:
        if error.status in (400, 403, 422):
            raise kopf.PermanentError(f"the API server refused a child: {error}") from error
        raise kopf.TemporaryError(f"creating children: {error}", delay=_RETRY) from error
    logger.info(
        f"Cell {name}: {len(children)} children in place "
        f"(database, {len(SERVICES)} services, migrate Job)"
    )
    created = cond.set_condition(
        (body.get("status") or {}).get("conditions", []), "ChildrenCreated", True, "Applied",
        f"{len(children)} objects from template {spec.get('templateVersion')}",
    )  # fmt: skip
    await rt.kube.patch("Cell", namespace, name, {"status": {"conditions": created}}, status=True)
    await refresh(rt, namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def child_changed(labels: kopf.Labels, namespace: str | None, memo: Any, **_: Any) -> None:
    """A Deployment or Job of a cell changed: its readiness may have too."""
    namespace = namespace or "default"
    cell = labels.get(CELL_LABEL)
    if cell and getattr(memo, "runtime", None) is not None:
        await refresh(runtime(memo), namespace, cell)


@kopf.timer(GROUP, VERSION, "cells", interval=30, initial_delay=5)
async def keep_status(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    """A safety net: the status converges even after a missed watch event."""
    namespace = namespace or "default"
    await refresh(runtime(memo), namespace, name)


@kopf.on.delete(GROUP, VERSION, "cells")
async def retire_cell(
    name: str, namespace: str | None, body: kopf.Body, memo: Any, **_: Any
) -> None:
    """Refuse while tenants are placed here; the finalizer stays until the last one leaves."""
    namespace = namespace or "default"
    rt = runtime(memo)
    tenants = await placed_tenants(rt, namespace, name)
    if tenants:
        names = ", ".join(sorted(t["metadata"]["name"] for t in tenants))
        message = f"{len(tenants)} tenant(s) still placed here: {names}; delete or move them first"
        blocked = cond.set_condition(
            (body.get("status") or {}).get("conditions", []), "DeletionBlocked", True,
            "TenantsPlaced", message,
        )  # fmt: skip
        await refresh(rt, namespace, name, {"conditions": blocked, "phase": "Terminating"})
        kopf.warn(body, reason="DeletionBlocked", message=message)
        raise kopf.TemporaryError(message, delay=15)
    # Children go with the Cell through their owner references; the database is kept, since
    # dropping data is a decision for a person, not for a controller.

"""Tenant handlers: place in a cell (cloning one if needed), provision, deprovision."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
import kopf

from lianluo.operator import cells
from lianluo.operator import conditions as cond
from lianluo.operator.kube import ApiError, Obj
from lianluo.operator.placement import CellRoom, best_fit, next_cell_name
from lianluo.operator.runtime import CELL_ANNOTATION, GROUP, VERSION, Runtime, runtime
from lianluo.operator.template import cell_manifest
from lianluo.operator.tenants_api import RETRYABLE

_WAIT_FOR_CELL = 3.0
_RETRY = 5.0


def _rooms(all_cells: list[Obj], tenants: list[Obj], exclude: str) -> list[CellRoom]:
    """Each live cell's capacity and load, counted from the Tenants placed in it."""
    load: dict[str, tuple[int, int]] = {}
    for t in tenants:
        cell = t["metadata"].get("annotations", {}).get(CELL_ANNOTATION)
        if cell and t["metadata"]["name"] != exclude:
            sessions, count = load.get(cell, (0, 0))
            load[cell] = (sessions + int(t["spec"]["expectedConcurrentSessions"]), count + 1)
    rooms = []
    for c in all_cells:
        if c["metadata"].get("deletionTimestamp"):
            continue
        capacity = c["spec"]["capacity"]
        sessions, count = load.get(c["metadata"]["name"], (0, 0))
        ready = (c.get("status") or {}).get("phase") == "Ready"
        rooms.append(CellRoom(c["metadata"]["name"], capacity["maxSessions"],
                              capacity["maxTenants"], sessions, count, ready))  # fmt: skip
    return rooms


async def _place(rt: Runtime, name: str, namespace: str, sessions: int, body: kopf.Body) -> str:
    """Choose (or clone) the tenant's cell and record it on the Tenant before anyone else places."""
    async with rt.placement_lock:
        # Re-read: a restarted operator, or the previous attempt, may have placed it already.
        current = await rt.kube.get("Tenant", namespace, name)
        chosen = ((current or {}).get("metadata", {}).get("annotations") or {}).get(CELL_ANNOTATION)
        all_cells = await rt.kube.list("Cell", namespace)
        live = {
            c["metadata"]["name"] for c in all_cells if not c["metadata"].get("deletionTimestamp")
        }
        if chosen in live:
            return str(chosen)
        tenants = await rt.kube.list("Tenant", namespace)
        room = best_fit(_rooms(all_cells, tenants, exclude=name), sessions)
        if room is None:
            s = rt.settings
            if sessions > s.cell_max_sessions:
                raise kopf.PermanentError(
                    f"{sessions} expected sessions exceed a new cell's {s.cell_max_sessions}"
                )
            new = next_cell_name(c["metadata"]["name"] for c in all_cells)
            manifest = cell_manifest(new, s.cell_max_sessions, s.cell_max_tenants,
                                     s.cell_replicas, s.template_version)  # fmt: skip
            try:
                await rt.kube.create("Cell", namespace, manifest)
            except ApiError as error:
                # 409: another attempt created it first; the next try re-reads and uses it.
                raise kopf.TemporaryError(f"cloning {new}: {error}", delay=1) from error
            kopf.info(body, reason="CellCloned", message=f"no cell had room; cloned {new}")
            chosen = new
        else:
            chosen = room.name
        await rt.kube.patch("Tenant", namespace, name,
                            {"metadata": {"annotations": {CELL_ANNOTATION: chosen}}})  # fmt: skip
        kopf.info(body, reason="Placed", message=f"placed in {chosen} ({sessions} sessions)")
    await cells.refresh(rt, namespace, str(chosen))
    return str(chosen)


def _status(
    patch: kopf.Patch, status: kopf.Status, phase: str, **conditions: tuple[bool, str, str]
) -> None:
    current = list((patch.status.get("conditions") or status.get("conditions")) or [])
    for kind, (ok, reason, message) in conditions.items():
        current = cond.set_condition(current, kind, ok, reason, message)
    patch.status["phase"] = phase
    patch.status["conditions"] = current


async def _release(rt: Runtime, namespace: str, name: str, cell: str) -> None:
    """Give a refused tenant's room back: it is no longer placed, so no cell counts it."""
    await rt.kube.patch("Tenant", namespace, name,
                        {"metadata": {"annotations": {CELL_ANNOTATION: None}}})  # fmt: skip
    await cells.refresh(rt, namespace, cell)


def _failed(
    patch: kopf.Patch, status: kopf.Status, body: kopf.Body, reason: str, text: str
) -> NoReturn:
    """Say why the tenant cannot be served, on its status and as an Event, and stop retrying
    until its spec changes."""
    patch.status["cell"] = None
    _status(patch, status, "Failed", Provisioned=(False, reason, text),
            Ready=(False, "Failed", text))  # fmt: skip
    kopf.warn(body, reason=reason, message=text)
    raise kopf.PermanentError(text)


async def _admit(
    rt: Runtime, name: str, namespace: str, uid: str, spec: kopf.Spec, status: kopf.Status,
    body: kopf.Body, patch: kopf.Patch,
) -> None:  # fmt: skip
    """Place, wait for the cell to be Ready, then provision; each step is safe to repeat.

    A refusal (the tenants API's, or no cell big enough) leaves nothing behind: what was
    created is deleted, the room in the cell is released, and the status and an Event say why.
    """
    sessions = int(spec["expectedConcurrentSessions"])
    try:
        cell = await _place(rt, name, namespace, sessions, body)
    except kopf.PermanentError as error:
        _failed(patch, status, body, "NoRoom", str(error))
    patch.status["cell"] = cell
    cell_body = await rt.kube.get("Cell", namespace, cell)
    if ((cell_body or {}).get("status") or {}).get("phase") != "Ready":
        _status(patch, status, "Placed", Placed=(True, "Placed", f"in {cell}"),
                CellReady=(False, "Waiting", f"{cell} is not Ready yet"),
                Ready=(False, "CellNotReady", f"waiting for {cell}"))  # fmt: skip
        raise kopf.TemporaryError(f"waiting for {cell} to be Ready", delay=_WAIT_FOR_CELL)
    try:
        # The Tenant's uid as request_id: a repeat after any crash returns the same tenant.
        tenant = await rt.tenants.provision(name, dict(spec), request_id=uid, cell=cell)
    except grpc.aio.AioRpcError as error:
        text = f"tenants API: {error.code().name}: {error.details()}"
        if error.code() in RETRYABLE:
            _status(patch, status, "Provisioning", CellReady=(True, "Ready", f"{cell} is Ready"),
                    Provisioned=(False, "Retrying", text))  # fmt: skip
            raise kopf.TemporaryError(text, delay=_RETRY) from error
        await _release(rt, namespace, name, cell)
        _failed(patch, status, body, "Refused", text)
    patch.status["tenantId"] = tenant.id
    _status(patch, status, "Ready", Placed=(True, "Placed", f"in {cell}"),
            CellReady=(True, "Ready", f"{cell} is Ready"),
            Provisioned=(True, "Created", f"tenant id {tenant.id}"),
            Ready=(True, "Ready", f"serving in {cell}"))  # fmt: skip
    kopf.info(body, reason="Provisioned", message=f"tenant {tenant.id} provisioned in {cell}")


@kopf.on.create(GROUP, VERSION, "tenants")
async def onboard(
    name: str, namespace: str | None, uid: str, spec: kopf.Spec, status: kopf.Status,
    body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any,
) -> None:  # fmt: skip
    await _admit(runtime(memo), name, namespace or "default", uid, spec, status, body, patch)


@kopf.on.update(GROUP, VERSION, "tenants", field="spec")
async def follow_changes(
    name: str, namespace: str | None, uid: str, spec: kopf.Spec, status: kopf.Status,
    annotations: kopf.Annotations, body: kopf.Body, patch: kopf.Patch, memo: Any, **_: Any,
) -> None:  # fmt: skip
    """Carry spec changes to the tenants API; a tenant is never moved out of its cell. A
    tenant that failed is admitted again with its new spec."""
    namespace = namespace or "default"
    rt = runtime(memo)
    tenant_id = status.get("tenantId")
    if not tenant_id:
        # kopf runs update handlers only once creation is done: without a tenant id, it failed.
        await _admit(rt, name, namespace, uid, spec, status, body, patch)
        return
    try:
        await rt.tenants.update(tenant_id, name, dict(spec), status.get("cell") or "")
    except grpc.aio.AioRpcError as error:
        text = f"tenants API: {error.code().name}: {error.details()}"
        if error.code() in RETRYABLE:
            raise kopf.TemporaryError(text, delay=_RETRY) from error
        raise kopf.PermanentError(text) from error
    cell = annotations.get(CELL_ANNOTATION)
    if not cell:
        return
    refreshed = await cells.refresh(rt, namespace, cell) or {}
    load = (refreshed.get("status") or {}).get("load", {})
    if load.get("sessionsPercent", 0) > 100:
        message = f"{cell} now expects {load['sessions']} sessions, past its capacity"
        kopf.warn(body, reason="CellOverCommitted", message=message)


@kopf.on.delete(GROUP, VERSION, "tenants")
async def offboard(name: str, namespace: str | None, uid: str, spec: kopf.Spec, status: kopf.Status,
                   annotations: kopf.Annotations, body: kopf.Body, memo: Any,
                   **_: Any) -> None:  # fmt: skip
    """Deprovision behind the finalizer, then give the cell its room back."""
    namespace = namespace or "default"
    rt = runtime(memo)
    tenant_id = status.get("tenantId")
    cell = annotations.get(CELL_ANNOTATION)
    try:
        if not tenant_id and cell and status.get("phase") != "Failed":
            # A crash may have come between provisioning and writing the status; the same
            # request_id finds that tenant (or makes one to delete at once).
            tenant_id = (await rt.tenants.provision(name, dict(spec), uid, cell)).id
        if tenant_id:
            await rt.tenants.deprovision(tenant_id, cell or "")
    except grpc.aio.AioRpcError as error:
        text = f"tenants API: {error.code().name}: {error.details()}"
        if error.code() in RETRYABLE:
            raise kopf.TemporaryError(text, delay=_RETRY) from error
        if tenant_id:
            raise kopf.PermanentError(text) from error
    kopf.info(
        body, reason="Deprovisioned", message=f"tenant {tenant_id or '(never provisioned)'} deleted"
    )
    if cell:
        await cells.refresh(rt, namespace, cell)

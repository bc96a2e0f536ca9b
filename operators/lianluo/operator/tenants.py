"""Tenant handlers: place in a cell (cloning one if needed), provision, deprovision."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NoReturn, cast

import grpc
import kopf

from lianluo.operator import cells, surge
from lianluo.operator import conditions as cond
from lianluo.operator.kube import ApiError, Obj
from lianluo.operator.move import MoveFailed
from lianluo.operator.placement import CellRoom, best_fit, next_cell_name
from lianluo.operator.runtime import CELL_ANNOTATION, GROUP, VERSION, Runtime, notice, runtime
from lianluo.operator.template import cell_manifest
from lianluo.operator.tenants_api import RETRYABLE

_WAIT_FOR_CELL = 3.0
_RETRY = 5.0
# How often each cell looks at its tenants' standby schedules: a window opens or closes this
# late at most.
_SEATS_CHECK = 10.0


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


async def _place(
    rt: Runtime, name: str, namespace: str, sessions: int, body: kopf.Body, wanted: str = ""
) -> str:
    """Choose (or clone) the tenant's cell, or take the one its spec names, and record it on
    the Tenant before anyone else places."""
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
        if wanted:
            if wanted not in live:
                raise kopf.PermanentError(f"spec.cell: there is no cell {wanted!r}")
            room: CellRoom | None = next(
                r for r in _rooms(all_cells, tenants, exclude=name) if r.name == wanted
            )
        else:
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
            notice(body, "CellCloned", f"no cell had room; cloned {new}")
            chosen = new
        else:
            chosen = room.name
        await rt.kube.patch("Tenant", namespace, name,
                            {"metadata": {"annotations": {CELL_ANNOTATION: chosen}}})  # fmt: skip
        notice(
            body,
            "Placed",
            f"placed in {chosen} ({sessions} sessions)",
        )
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
        cell = await _place(rt, name, namespace, sessions, body, spec.get("cell") or "")
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
    notice(body, "Provisioned", f"tenant {tenant.id} provisioned in {cell}")


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
    """Carry spec changes to the tenants API, and move the tenant when `spec.cell` names
    another cell than the one serving it. A tenant that failed is admitted again with its new
    spec."""
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
    wanted = spec.get("cell")
    if wanted and wanted != cell:
        await _move(rt, namespace, name, tenant_id, cell, wanted, status, body, patch)
        await seat_cell(rt, namespace, cell)  # the cell it left
        cell = wanted
    await seat_cell(rt, namespace, cell)  # seats and a schedule take effect at once
    refreshed = await cells.refresh(rt, namespace, cell) or {}
    load = (refreshed.get("status") or {}).get("load", {})
    if load.get("sessionsPercent", 0) > 100:
        message = (
            f"{cell} now expects {load['sessions']} sessions, past its capacity: "
            "move a tenant out by its spec.cell"
        )
        kopf.warn(body, reason="CellOverCommitted", message=message)


async def _move(
    rt: Runtime, namespace: str, name: str, tenant_id: str, source: str, target: str,
    status: kopf.Status, body: kopf.Body, patch: kopf.Patch,
) -> None:  # fmt: skip
    """Move a served tenant to the cell its spec now names (lianluo.operator.move): drain,
    copy, serve, switch, retire. A cell that is missing or full is refused, and the tenant
    stays served where it is; a move that fails on the way is tried again."""
    assert rt.mover is not None
    async with rt.placement_lock:
        all_cells = await rt.kube.list("Cell", namespace)
        rooms = {r.name: r for r in _rooms(all_cells, await rt.kube.list("Tenant", namespace),
                                           exclude=name)}  # fmt: skip
    room = rooms.get(target)
    sessions = int(body["spec"]["expectedConcurrentSessions"])
    if room is None:
        problem = f"there is no cell {target!r}"
    elif not room.fits(sessions):
        problem = f"{target} has no room for {sessions} more sessions"
    else:
        problem = ""
    if problem:
        text = f"spec.cell: {problem}; the tenant stays in {source}"
        _status(patch, status, "Ready", Moved=(False, "Refused", text))
        kopf.warn(body, reason="MoveRefused", message=text)
        raise kopf.PermanentError(text)
    if room is not None and not room.ready:  # (a missing one was refused above)
        raise kopf.TemporaryError(f"waiting for {target} to be Ready", delay=_WAIT_FOR_CELL)
    notice(body, "Moving", f"moving from {source} to {target}")
    try:
        copied = await rt.mover.move(tenant_id, rt.ends(source), rt.ends(target))
    except MoveFailed as error:
        text = f"moving to {target}: {error}"
        _status(patch, status, "Ready", Moved=(False, "Retrying", text))
        raise kopf.TemporaryError(text, delay=_RETRY) from error
    await rt.kube.patch("Tenant", namespace, name,
                        {"metadata": {"annotations": {CELL_ANNOTATION: target}}})  # fmt: skip
    patch.status["cell"] = target
    rows = sum(copied.values())
    _status(patch, status, "Ready", Placed=(True, "Placed", f"in {target}"),
            Moved=(True, "Moved", f"from {source} ({rows} rows)"),
            Ready=(True, "Ready", f"serving in {target}"))  # fmt: skip
    notice(body, "Moved", f"moved from {source} to {target} ({rows} rows copied)")
    for cell in (source, target):
        await cells.refresh(rt, namespace, cell)


@kopf.timer(GROUP, VERSION, "cells", interval=_SEATS_CHECK, initial_delay=1)
async def follow_seats(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    """Each tenant of the cell works with its own seats, or its standby pool too while its
    schedule or target calls it in; the cell scales with the sum."""
    await seat_cell(runtime(memo), namespace or "default", name)


async def seat_cell(rt: Runtime, namespace: str, cell: str) -> None:
    """Write each placed tenant's seats now on its status (with an Event when its standby pool
    is called in or let go), and their sum on the Cell (`spec.seats`): the template gives the
    cell's services the replicas those seats need."""
    now = datetime.now(UTC)
    async with rt.placement_lock:
        total = 0
        for t in await cells.placed_tenants(rt, namespace, cell):
            if t["metadata"].get("deletionTimestamp"):
                continue  # leaving: its seats are the cell's no more
            total += await _seat_tenant(rt, namespace, t, now)
        body = await rt.kube.get("Cell", namespace, cell)
        if body is not None and int(body["spec"].get("seats", 0)) != total:
            await rt.kube.patch("Cell", namespace, cell, {"spec": {"seats": total}})


async def _seat_tenant(rt: Runtime, namespace: str, tenant: Obj, now: datetime) -> int:
    name, spec = tenant["metadata"]["name"], tenant["spec"]
    # A list's items carry no kind: an Event needs it to name the Tenant.
    tenant = {**tenant, "apiVersion": f"{GROUP}/{VERSION}", "kind": "Tenant"}
    status = tenant.get("status") or {}
    conditions = list(status.get("conditions") or [])
    said = next((c for c in conditions if c.get("type") == "SeatsValid"), None)
    problems = surge.window_problems(spec)
    if problems:
        # Said once, not at every check: the condition holds it until the spec is fixed.
        text = "; ".join(problems)
        if said is None or said.get("message") != text:
            changed = cond.set_condition(conditions, "SeatsValid", False, "Invalid", text)
            await rt.kube.patch("Tenant", namespace, name, {"status": {"conditions": changed}},
                                status=True)  # fmt: skip
            kopf.warn(cast(kopf.Body, tenant), reason="SeatsInvalid", message=text)
        return int(spec.get("seats", 0))
    seats = surge.seats_at(spec, now)
    before = status.get("seats") or {}
    change: dict[str, Any] = {}
    if before != seats.as_status():
        change["seats"] = seats.as_status()
    if said is not None and said.get("status") == "False":
        change["conditions"] = cond.set_condition(conditions, "SeatsValid", True, "Valid", "")
    if change:
        await rt.kube.patch("Tenant", namespace, name, {"status": change}, status=True)
    if seats.standby and not before.get("standby"):
        message = f"{seats.active} seats: {seats.standby} standby ({seats.reason})"
        notice(cast(kopf.Body, tenant), "SurgeStarted", message)
    elif before.get("standby") and not seats.standby:
        message = f"back to {seats.active} seats"
        notice(cast(kopf.Body, tenant), "SurgeEnded", message)
    return seats.active


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
    notice(
        body,
        "Deprovisioned",
        f"tenant {tenant_id or '(never provisioned)'} deleted",
    )
    if cell:
        await seat_cell(rt, namespace, cell)
        await cells.refresh(rt, namespace, cell)

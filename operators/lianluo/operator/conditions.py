"""Status conditions and cell readiness, computed from plain objects. Pure."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Iterable[Mapping[str, Any]],
    kind: str,
    status: bool,
    reason: str,
    message: str = "",
    at: str | None = None,
) -> list[dict[str, Any]]:
    """The conditions with `kind` set; its transition time moves only when its status changes."""
    value = "True" if status else "False"
    result: list[dict[str, Any]] = []
    found = False
    for condition in conditions:
        if condition.get("type") != kind:
            result.append(dict(condition))
            continue
        found = True
        changed = condition.get("status") != value
        since = (at or now()) if changed else condition.get("lastTransitionTime", at or now())
        result.append(
            {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": since,
            }
        )
    if not found:
        result.append(
            {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": at or now(),
            }
        )
    return result


def condition_true(conditions: Iterable[Mapping[str, Any]], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def deployment_available(deployment: Mapping[str, Any]) -> bool:
    """Every wanted replica updated and available, for the Deployment's current generation."""
    want = int(deployment.get("spec", {}).get("replicas", 1))
    status = deployment.get("status") or {}
    generation = int(deployment.get("metadata", {}).get("generation", 0))
    return (
        int(status.get("observedGeneration", 0)) >= generation
        and int(status.get("updatedReplicas", 0)) >= want
        and int(status.get("availableReplicas", 0)) >= want
    )


def job_complete(job: Mapping[str, Any]) -> bool:
    status = job.get("status") or {}
    return int(status.get("succeeded", 0)) >= 1 or condition_true(
        status.get("conditions", []), "Complete"
    )


def cell_readiness(
    deployments: Iterable[Mapping[str, Any]],
    jobs: Iterable[Mapping[str, Any]],
    services: Iterable[str],
) -> tuple[bool, str]:
    """Whether a cell is Ready, and if not, what it still waits for."""
    by_service = {d["metadata"]["labels"].get("app.kubernetes.io/name"): d for d in deployments}
    missing = [s for s in services if s not in by_service]
    waiting = [s for s, d in sorted(by_service.items()) if not deployment_available(d)]
    unfinished = [j["metadata"]["name"] for j in jobs if not job_complete(j)]
    parts = []
    if missing:
        parts.append(f"no Deployment yet for {', '.join(missing)}")
    if waiting:
        parts.append(f"waiting for available replicas of {', '.join(waiting)}")
    if unfinished:
        parts.append(f"waiting for {', '.join(unfinished)} to complete")
    return (not parts, "; ".join(parts) or "every service available")

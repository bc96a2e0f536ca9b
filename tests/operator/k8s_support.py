"""Helpers for the operator tests: the operator's own client with test extras, and polling."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from lianluo.operator.kube import ApiError, Kube

CRDS = Path(__file__).resolve().parents[2] / "operators" / "crds"


class Api(Kube):
    """The operator's own client, plus what the tests need on top."""

    async def apply_crds(self) -> None:
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        for file in sorted(CRDS.glob("*.yaml")):
            crd = yaml.safe_load(file.read_text())
            try:
                await self.call("POST", path, crd)
            except ApiError as error:
                if error.status != 409:
                    raise
            name = crd["metadata"]["name"]
            await eventually(lambda n=name: self._established(f"{path}/{n}"), within=30)

    async def _established(self, path: str) -> bool:
        crd = await self.call("GET", path)
        return any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (crd.get("status") or {}).get("conditions") or []
        )

    async def make_ready(self, namespace: str, cell: str) -> None:
        """Write the status a kubelet and the workload controllers would, for a cell's children."""
        selector = f"lianluo.io/cell={cell}"
        for d in await self.list("Deployment", namespace, selector):
            n = d["spec"]["replicas"]
            status = {"observedGeneration": d["metadata"]["generation"], "replicas": n,
                      "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n}  # fmt: skip
            await self.patch(
                "Deployment", namespace, d["metadata"]["name"], {"status": status}, True
            )
        for j in await self.list("Job", namespace, selector):
            status = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
            await self.patch("Job", namespace, j["metadata"]["name"], {"status": status}, True)

    async def events(self, namespace: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (
            await self.call("GET", f"/api/v1/namespaces/{namespace}/events")
        )["items"]
        return items


async def eventually(
    check: Callable[[], Awaitable[Any]], within: float = 60, every: float = 0.3
) -> Any:
    """Poll until `check` returns something truthy; fail with its last answer."""
    deadline = asyncio.get_running_loop().time() + within
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"not reached in {within}s; last answer: {last!r}")

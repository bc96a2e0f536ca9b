"""Helpers for the operator tests: the operator's own client with test extras, and polling."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from lianluo.devstack import helm, k8s
from lianluo.operator.kube import ApiError, Kube

CRDS = Path(__file__).resolve().parents[2] / "operators" / "crds"


class Api(Kube):
    """The operator's own client, plus what the tests need on top."""

    async def apply_crds(self) -> None:
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        for file in sorted(CRDS.glob("*.yaml")):
            crd = yaml.safe_load(file.read_text())
            name = crd["metadata"]["name"]
            try:
                await self.call("POST", path, crd)
            except ApiError as error:
                if error.status != 409:
                    raise
                # Already there (an API server kept from an earlier run): bring it up to date.
                current = await self.call("GET", f"{path}/{name}")
                crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                await self.call("PUT", f"{path}/{name}", crd)
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


CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "lianluo"
_RBAC_PATHS = {
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
}


async def chart_account(
    api: Api,
    cluster: Any,
    namespace: str,
    folder: Path,
    template: str = "templates/rbac.yaml",
    component: str = "operator",
    values: tuple[str, ...] = (),
) -> Path:
    """A ServiceAccount and its role exactly as the chart's `template` renders them (with
    `--set` `values`), installed in `namespace`; a kubeconfig with a token of the account of
    `component` (the API server's TokenRequest)."""
    helm_bin = str(helm.tools(fetch=False).helm)
    sets = [arg for value in values for arg in ("--set", value)]
    rendered = (
        await asyncio.to_thread(
            subprocess.run,
            [helm_bin, "template", namespace, str(CHART), "--namespace", namespace,
             "--show-only", template, *sets],
            capture_output=True, text=True, timeout=60, check=True,
        )
    ).stdout  # fmt: skip
    account = ""
    for doc in yaml.safe_load_all(rendered):
        if not doc or doc["kind"] == "Job":
            continue  # a hook's Job: its account is what is tested here (no kubelet runs it)
        kind = doc["kind"]
        # The chart grants nothing cluster-wide; a kind it adds must be added here to be tested.
        assert kind in _RBAC_PATHS, f"the chart's {template} renders a {kind}"
        doc["metadata"]["namespace"] = namespace
        await api.call("POST", _RBAC_PATHS[kind].format(ns=namespace), doc)
        labels = doc["metadata"].get("labels", {})
        if kind == "ServiceAccount" and labels.get("app.kubernetes.io/component") == component:
            account = doc["metadata"]["name"]
    issued = await api.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 3600}},
    )  # fmt: skip
    path = folder / f"{namespace}-{component}.kubeconfig"
    k8s.write_kubeconfig(path, cluster.server, issued["status"]["token"], cluster.ca_file)
    return path

"""A small asynchronous Kubernetes REST client on aiohttp, with kopf's own login."""

from __future__ import annotations

import base64
import ssl
import tempfile
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

Obj = dict[str, Any]

# kind -> (API path prefix, plural)
_KINDS = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"),
    "Service": ("/api/v1", "services"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Job": ("/apis/batch/v1", "jobs"),
    "Cell": ("/apis/lianluo.io/v1alpha1", "cells"),
    "Tenant": ("/apis/lianluo.io/v1alpha1", "tenants"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
}


class ApiError(Exception):
    """A non-success answer from the API server."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    context = ssl.create_default_context(cafile=str(info.ca_path) if info.ca_path else None)
    if info.ca_data:
        data = info.ca_data
        text = base64.b64decode(data).decode() if _is_base64(data) else _text(data)
        context.load_verify_locations(cadata=text)
    cert, key = info.certificate_path, info.private_key_path
    if info.certificate_data and info.private_key_data:
        # The ssl module loads client certificates only from files.
        cert, key = _temp(info.certificate_data), _temp(info.private_key_data)
    if cert:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


def _text(data: str | bytes) -> str:
    return data.decode() if isinstance(data, bytes) else data


def _is_base64(data: str | bytes) -> bool:
    return "-----BEGIN" not in _text(data)


def _temp(data: str | bytes) -> str:
    raw = base64.b64decode(data) if _is_base64(data) else _text(data).encode()
    with tempfile.NamedTemporaryFile(delete=False, suffix=".pem") as f:
        f.write(raw)
        return f.name


@dataclass
class Kube:
    """Namespaced CRUD on the kinds the operator touches."""

    server: str
    headers: dict[str, str]
    ssl: ssl.SSLContext | bool
    session: aiohttp.ClientSession | None = field(default=None, repr=False)

    @classmethod
    def from_connection(cls, info: kopf.ConnectionInfo) -> Kube:
        return cls(info.server.rstrip("/"), info.as_http_headers(), _ssl_context(info))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def _path(self, kind: str, namespace: str, name: str | None = None, sub: str = "") -> str:
        prefix, plural = _KINDS[kind]
        path = f"{prefix}/namespaces/{namespace}/{plural}"
        return path + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")

    async def call(self, method: str, path: str, body: Obj | None = None, **kw: Any) -> Obj:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                headers=self.headers, timeout=aiohttp.ClientTimeout(total=30)
            )
        content_type = kw.pop("content_type", "application/json")
        async with self.session.request(
            method, self.server + path, json=body, ssl=self.ssl,
            headers={"Content-Type": content_type}, **kw,
        ) as reply:  # fmt: skip
            data: Obj = await reply.json(content_type=None) if reply.content_length != 0 else {}
            if reply.status >= 400:
                raise ApiError(reply.status, str((data or {}).get("message", reply.reason)))
            return data

    async def served(self, group_versions: list[str]) -> frozenset[str]:
        """Which of `group_versions` ("policy/v1") the API server serves (discovery is open to
        every account)."""
        found = set()
        for group_version in group_versions:
            try:
                await self.call("GET", f"/apis/{group_version}")
                found.add(group_version)
            except ApiError as error:
                if error.status != 404:
                    raise
        return frozenset(found)

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        try:
            return await self.call("GET", self._path(kind, namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def list(self, kind: str, namespace: str, selector: str = "") -> list[Obj]:
        params = {"labelSelector": selector} if selector else {}
        items: list[Obj] = (await self.call("GET", self._path(kind, namespace), params=params))[
            "items"
        ]
        return items

    async def create(self, kind: str, namespace: str, body: Obj) -> Obj:
        return await self.call("POST", self._path(kind, namespace), body)

    async def patch(
        self, kind: str, namespace: str, name: str, body: Obj, status: bool = False
    ) -> Obj:
        path = self._path(kind, namespace, name, "status" if status else "")
        return await self.call("PATCH", path, body, content_type="application/merge-patch+json")

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        # What the object owns goes with it (a Job's pods are otherwise left behind).
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        try:
            await self.call("DELETE", self._path(kind, namespace, name), options)
        except ApiError as error:
            if error.status != 404:
                raise

    async def apply(self, kind: str, namespace: str, body: Obj) -> Obj:
        """Create the object, or merge its spec and data into the existing one."""
        try:
            return await self.create(kind, namespace, body)
        except ApiError as error:
            if error.status != 409:
                raise
        change = {k: v for k, v in body.items() if k in ("spec", "data", "stringData")}
        if kind == "Job":
            # A Job's pod template is immutable; the one that exists stands.
            change = {}
        change["metadata"] = {"labels": body["metadata"].get("labels", {})}
        return await self.patch(kind, namespace, body["metadata"]["name"], change)

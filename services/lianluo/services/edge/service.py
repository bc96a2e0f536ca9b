"""The edge's logic: authorise, then answer from the tenant configuration view."""

from __future__ import annotations

from lianluo.edge.v1 import edge_pb2 as pb
from lianluo.runtime import auth
from lianluo.runtime.errors import FieldViolation, InvalidArgument, NotFound
from lianluo.runtime.tenant_config import TenantConfigView
from lianluo.services.edge.domain import locate


class Edge:
    def __init__(self, view: TenantConfigView, template: str, services: list[str]) -> None:
        self._view = view
        self._template = template
        self._services = services

    def locate_tenant(self, tenant_id: str) -> pb.TenantLocation:
        if not tenant_id:
            raise InvalidArgument([FieldViolation("tenant_id", "must be set")])
        auth.require_tenant(tenant_id)
        tenant = self._view.tenant(tenant_id)
        if tenant is None:
            raise NotFound("tenant", tenant_id)
        return locate(tenant, self._template, self._services)

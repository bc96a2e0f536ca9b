"""Where a tenant lives: a pure function of its placement and the endpoint naming rule."""

from __future__ import annotations

from lianluo.edge.v1 import edge_pb2 as pb
from lianluo.runtime.errors import FailedPrecondition
from lianluo.tenants.v1 import tenants_pb2 as tpb


def locate(tenant: tpb.Tenant, template: str, services: list[str]) -> pb.TenantLocation:
    if not tenant.cell:
        raise FailedPrecondition(f"tenant/{tenant.id}", "the tenant is not placed in a cell yet")
    return pb.TenantLocation(
        tenant_id=tenant.id,
        cell=tenant.cell,
        endpoints={s: template.format(cell=tenant.cell, service=s) for s in services},
    )

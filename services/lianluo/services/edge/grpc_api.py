"""The gRPC adapter of the edge."""

from __future__ import annotations

from typing import Any

from lianluo.edge.v1 import edge_pb2 as pb
from lianluo.edge.v1 import edge_pb2_grpc as rpc
from lianluo.runtime import auth
from lianluo.services.edge.service import Edge


class EdgeApi(rpc.EdgeServiceServicer):
    def __init__(self, edge: Edge) -> None:
        self.edge = edge

    @auth.needs("config:read")
    async def LocateTenant(self, request: pb.LocateTenantRequest, _: Any) -> pb.TenantLocation:
        return self.edge.locate_tenant(request.tenant_id)

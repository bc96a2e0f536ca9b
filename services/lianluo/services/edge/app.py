"""Composition root of the edge: a tenant configuration view behind one lookup RPC."""

from __future__ import annotations

from lianluo.edge.v1 import edge_pb2 as pb
from lianluo.edge.v1 import edge_pb2_grpc as rpc
from lianluo.runtime.service import Service, ServiceSpec
from lianluo.services.edge.grpc_api import EdgeApi
from lianluo.services.edge.service import Edge
from lianluo.services.edge.settings import EdgeSettings

# The edge keeps no state of its own: no migrations beyond the runtime's, no topics it writes.
SPEC = ServiceSpec(name="edge", settings=EdgeSettings, migrations=None)


async def build(settings: EdgeSettings) -> Service:
    service = Service(SPEC, settings)
    await service.start_storage()
    view = await service.follow_tenant_config()
    edge = Edge(view, settings.edge_endpoint_template, settings.edge_cell_services)
    service.add_grpc(
        rpc.add_EdgeServiceServicer_to_server,
        EdgeApi(edge),
        pb.DESCRIPTOR.services_by_name["EdgeService"].full_name,
    )
    return service


async def serve(settings: EdgeSettings) -> None:
    await (await build(settings)).serve()

"""Composition root of the tenants service: wire the parts together and serve."""

from __future__ import annotations

from pathlib import Path

from lianluo.domain.words import Segmenter
from lianluo.runtime import contract
from lianluo.runtime.grpc_server import RegisterFn
from lianluo.runtime.service import Service, ServiceSpec
from lianluo.services.tenants import events
from lianluo.services.tenants.audio import Audio
from lianluo.services.tenants.audio_api import AudioApi
from lianluo.services.tenants.audio_repository import AudioRepository
from lianluo.services.tenants.grpc_api import (
    AgentApi,
    ApiKeyApi,
    AuditApi,
    AuthApi,
    ChannelApi,
    FlowApi,
    NotificationConfigApi,
    QueueApi,
    TenantApi,
    UserApi,
)
from lianluo.services.tenants.keys import ApiKeys
from lianluo.services.tenants.knowledge import Knowledge
from lianluo.services.tenants.knowledge_api import KnowledgeApi
from lianluo.services.tenants.knowledge_repository import KnowledgeRepository
from lianluo.services.tenants.people import People
from lianluo.services.tenants.repository import Repository
from lianluo.services.tenants.service import TenantsService
from lianluo.services.tenants.settings import TenantsSettings
from lianluo.tenants.v1 import audio_pb2, knowledge_pb2
from lianluo.tenants.v1 import audio_pb2_grpc as audio_rpc
from lianluo.tenants.v1 import knowledge_pb2_grpc as knowledge_rpc
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

SPEC = ServiceSpec(
    name="tenants",
    settings=TenantsSettings,
    migrations=Path(__file__).parent / "migrations",
)


async def build(settings: TenantsSettings) -> Service:
    """Start storage and wire every part; the caller serves it."""
    service = Service(SPEC, settings)
    await service.start_storage()
    repo = Repository()
    topic = settings.topic(contract.TENANT_CONFIG.name)
    tenants = TenantsService(service.pool, repo, topic)
    keys = ApiKeys(service.pool, repo, topic)
    people = People(service.pool, repo, topic, tenants, keys)
    service.grpc.credentials = people
    apis: dict[str, tuple[RegisterFn, object]] = {
        "TenantService": (rpc.add_TenantServiceServicer_to_server, TenantApi(tenants)),
        "ApiKeyService": (rpc.add_ApiKeyServiceServicer_to_server, ApiKeyApi(keys)),
        "AuditService": (rpc.add_AuditServiceServicer_to_server, AuditApi(keys)),
        "UserService": (rpc.add_UserServiceServicer_to_server, UserApi(tenants, people)),
        "AuthService": (rpc.add_AuthServiceServicer_to_server, AuthApi(people)),
        "AgentService": (rpc.add_AgentServiceServicer_to_server, AgentApi(tenants)),
        "QueueService": (rpc.add_QueueServiceServicer_to_server, QueueApi(tenants)),
        "ChannelService": (rpc.add_ChannelServiceServicer_to_server, ChannelApi(tenants)),
        "FlowService": (rpc.add_FlowServiceServicer_to_server, FlowApi(tenants)),
        "NotificationConfigService": (
            rpc.add_NotificationConfigServiceServicer_to_server,
            NotificationConfigApi(tenants),
        ),
        "KnowledgeService": (
            knowledge_rpc.add_KnowledgeServiceServicer_to_server,
            KnowledgeApi(Knowledge(service.pool, repo, KnowledgeRepository(), Segmenter())),
        ),
        "AudioService": (
            audio_rpc.add_AudioServiceServicer_to_server,
            AudioApi(Audio(service.pool, repo, AudioRepository())),
        ),
    }
    # The knowledge base and the recordings have their own proto files; every other service
    # is in tenants.proto.
    services = {
        **pb.DESCRIPTOR.services_by_name,
        **knowledge_pb2.DESCRIPTOR.services_by_name,
        **audio_pb2.DESCRIPTOR.services_by_name,
    }
    for name, (register, servicer) in apis.items():
        service.add_grpc(register, servicer, services[name].full_name)
    await service.add_consumer(events.handlers())
    return service


async def serve(settings: TenantsSettings) -> None:
    await (await build(settings)).serve()

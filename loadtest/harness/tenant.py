"""The load tenant: created through the tenants API with the admin key at the start of a run,
so synthetic traffic never mixes with a real tenant's figures."""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import grpc

from lianluo.acd.v1 import acd_pb2
from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc
from lianluo.common.v1 import common_pb2 as common
from lianluo.media.v1 import media_pb2 as mpb
from lianluo.media.v1 import media_pb2_grpc as media_rpc
from lianluo.tenants.v1 import tenants_pb2 as pb
from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

FLOW = "load-flow"
QUEUE = "load"
LANGUAGES = ["en", "zh-CN"]
CHANNELS = [
    common.CHANNEL_WEB,
    common.CHANNEL_APP,
    common.CHANNEL_H5,
    common.CHANNEL_WECHAT,
    common.CHANNEL_SMS,
    common.CHANNEL_EMAIL,
]
# Codes a service answers while it has not yet learned the new tenant from tenant.config.
PROPAGATING = (
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
)


@dataclass
class LoadTenant:
    tenant_id: str
    key: str
    run_id: str
    agents: list[str] = field(default_factory=list)
    standby: list[str] = field(default_factory=list)


def cell_addresses(path: str) -> dict[str, str]:
    """Service addresses as `lianluo run` writes them (.state/cell.json)."""
    return dict(json.loads(Path(path).read_text()))


def admin_key(path: str) -> str:
    return os.environ.get("LIANLUO_ADMIN_KEY") or Path(path).read_text().strip()


def baggage(run_id: str, profile: str) -> str:
    """W3C baggage marking every call of the run as synthetic (the services extract it)."""
    return f"lianluo.synthetic=true,lianluo.load.run={run_id},lianluo.load.profile={profile}"


def load_flow() -> pb.Flow:
    """A greeting, a two-way menu and the queue: the shape of most real self-service entries."""
    return pb.Flow(
        name=FLOW,
        entry_node="welcome",
        nodes=[
            pb.FlowNode(id="welcome", prompt=pb.PromptNode(text="Welcome.", next="menu")),
            pb.FlowNode(
                id="menu",
                menu=pb.MenuNode(
                    prompt="Sales or support?",
                    choices=[
                        pb.MenuChoice(digit="1", keywords=["sales"], label="Sales", next="queue"),
                        pb.MenuChoice(
                            digit="2", keywords=["support"], label="Support", next="queue"
                        ),
                    ],
                    max_retries=1,
                    no_match_next="queue",
                ),
            ),
            pb.FlowNode(id="queue", route_to_queue=pb.RouteToQueueNode(queue=QUEUE)),
        ],
    )


def create(
    addresses: dict[str, str],
    key: str,
    profile: str,
    agents: int,
    standby: int,
    capacity: int,
) -> LoadTenant:
    """Create the tenant, its key, queue, flow and agents; wait until every service knows them."""
    run_id = uuid.uuid4().hex[:8]
    admin = (("authorization", f"Bearer {key}"), ("baggage", baggage(run_id, profile)))
    with grpc.insecure_channel(addresses["tenants"]) as channel:
        tenant = rpc.TenantServiceStub(channel).CreateTenant(
            pb.CreateTenantRequest(
                tenant=pb.Tenant(
                    name=f"load-{profile}-{run_id}",
                    display_name=f"Synthetic load ({profile}, run {run_id})",
                    plan=pb.PLAN_ENTERPRISE,
                    expected_concurrent_sessions=1000,
                    channels=CHANNELS,
                ),
                request_id=f"load-{run_id}",
            ),
            metadata=admin,
        )
        secret = (
            rpc.ApiKeyServiceStub(channel)
            .CreateApiKey(
                pb.CreateApiKeyRequest(
                    tenant_id=tenant.id, scope=pb.API_KEY_SCOPE_TENANT, display_name="load"
                ),
                metadata=admin,
            )
            .secret
        )
        md = (("authorization", f"Bearer {secret}"), admin[1])
        rpc.QueueServiceStub(channel).CreateQueue(
            pb.CreateQueueRequest(
                tenant_id=tenant.id,
                queue=pb.Queue(
                    name=QUEUE,
                    priority=5,
                    max_wait_seconds=60,
                    media=common.MEDIA_TYPE_CHAT,
                    service_level=pb.ServiceLevel(threshold_seconds=20, target_percent=80),
                    overflow=pb.Overflow(kind=pb.OVERFLOW_KIND_MESSAGE),
                ),
            ),
            metadata=md,
        )
        rpc.FlowServiceStub(channel).PutFlow(
            pb.PutFlowRequest(tenant_id=tenant.id, flow=load_flow()), metadata=md
        )
        result = LoadTenant(tenant.id, secret, run_id)
        for group, count, prefix in (
            (result.agents, agents, "agent"),
            (result.standby, standby, "standby"),
        ):
            for i in range(count):
                agent = rpc.AgentServiceStub(channel).CreateAgent(
                    pb.CreateAgentRequest(
                        tenant_id=tenant.id,
                        agent=pb.Agent(
                            name=f"{prefix}-{i}",
                            kind=pb.AGENT_KIND_STAFF,
                            languages=LANGUAGES,
                            capacity=[
                                pb.MediaCapacity(
                                    media=common.MEDIA_TYPE_CHAT, max_concurrent=capacity
                                )
                            ],
                        ),
                    ),
                    metadata=md,
                )
                group.append(agent.id)
    _wait_known(addresses, result, md)
    return result


def _wait_known(
    addresses: dict[str, str], tenant: LoadTenant, md: Any, seconds: float = 60
) -> None:
    """Services learn the tenant from tenant.config, in order; the last agent created known to
    the ACD and to media, and one contact answered by the IVR, mean the whole setup is known."""
    last = (tenant.standby or tenant.agents)[-1]
    with (
        grpc.insecure_channel(addresses["acd"]) as ach,
        grpc.insecure_channel(addresses["media"]) as mch,
    ):
        acd = acd_rpc.AcdServiceStub(ach)
        media = media_rpc.MediaServiceStub(mch)
        _retry(
            lambda: acd.SetPresence(
                acd_pb2.SetPresenceRequest(
                    tenant_id=tenant.tenant_id, agent_id=last, presence=acd_pb2.PRESENCE_OFFLINE
                ),
                metadata=md,
                timeout=5,
            ),
            seconds,
        )
        started = _retry(
            lambda: media.StartInteraction(
                mpb.StartInteractionRequest(
                    tenant_id=tenant.tenant_id,
                    channel=common.CHANNEL_WEB,
                    media=common.MEDIA_TYPE_CHAT,
                    flow=FLOW,
                    request_id=f"warm-{tenant.run_id}",
                ),
                metadata=md,
                timeout=5,
            ),
            seconds,
        )
        iid = started.interaction.id
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            it = media.GetInteraction(
                mpb.GetInteractionRequest(tenant_id=tenant.tenant_id, interaction_id=iid),
                metadata=md,
                timeout=5,
            )
            if it.last_sequence > 2:  # the IVR's first prompt is on the timeline
                break
            gevent.sleep(0.2)
        else:
            raise TimeoutError("the IVR never answered the warm-up contact")
        media.End(
            mpb.EndRequest(
                tenant_id=tenant.tenant_id,
                interaction_id=iid,
                resolution=mpb.Resolution(code="warm_up"),
            ),
            metadata=md,
            timeout=5,
        )


def _retry(call: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except grpc.RpcError as error:
            if error.code() not in PROPAGATING or time.monotonic() > deadline:
                raise
            gevent.sleep(0.3)

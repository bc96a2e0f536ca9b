"""Lianluo load campaigns over gRPC. Run a profile: `make loadtest PROFILE=smoke`.

gevent must own the gRPC machinery before any channel exists, hence the init at the top.
"""

from __future__ import annotations

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import sys  # noqa: E402

import grpc  # noqa: E402
from harness import tenant  # noqa: E402
from harness.calls import Caller  # noqa: E402
from harness.slo import summary  # noqa: E402
from harness.users import Agent, Customer, StandbyAgent, Supervisor, Workload  # noqa: E402
from locust import events  # noqa: E402

from lianluo.acd.v1 import acd_pb2_grpc as acd_rpc  # noqa: E402
from lianluo.media.v1 import media_pb2_grpc as media_rpc  # noqa: E402

__all__ = ["Agent", "Customer", "StandbyAgent", "Supervisor"]


@events.init_command_line_parser.add_listener
def _options(parser: object) -> None:
    add = parser.add_argument  # type: ignore[attr-defined]
    add("--campaign", default="custom", help="The profile's name, for reports and baggage")
    add("--cell", default=".state/cell.json", help="Service addresses written by `lianluo run`")
    add("--admin-key-file", default=".state/admin-key", help="Unless LIANLUO_ADMIN_KEY is set")
    add("--agents", type=int, default=6, help="Agents signed in from the start")
    add("--standby-agents", type=int, default=0, help="Agents who sign in when a surge begins")
    add("--agent-capacity", type=int, default=2, help="Concurrent chats per agent")
    add("--supervisors", type=int, default=1)
    add("--abandon-rate", type=float, default=0.1, help="Share of contacts abandoned")
    add("--media-rate", type=float, default=0.2, help="Share of messages that are files/places")
    add("--think-seconds", type=float, default=1.0, help="Longest pause before a chat turn")
    add("--wrap-up-seconds", type=float, default=1.0)
    add("--surge-base", type=int, default=10, help="Customers before the surge")
    add("--surge-factor", type=int, default=10, help="How many times the arrivals rise")
    add("--slo-error-percent", type=float, default=1.0)
    add("--slo-offer-p95-ms", type=float, default=150.0)
    add("--slo-relay-p95-ms", type=float, default=100.0)
    add(
        "--latency-slos",
        choices=["on", "off"],
        default="on",
        help="off: judge only errors (what holds on any machine, as inside `make test`)",
    )


@events.init.add_listener
def _init(environment: object, **_: object) -> None:
    o = environment.parsed_options  # type: ignore[attr-defined]
    Agent.fixed_count = o.agents
    StandbyAgent.fixed_count = o.standby_agents
    Supervisor.fixed_count = o.supervisors
    # Staff come in fixed numbers; a kind with none (no standby outside a surge) is left out,
    # so that every weighted user is a customer.
    staff = (Agent, StandbyAgent, Supervisor)
    classes = environment.user_classes  # type: ignore[attr-defined]
    classes[:] = [c for c in classes if c not in staff or c.fixed_count > 0]


@events.test_start.add_listener
def _setup(environment: object, **_: object) -> None:
    """The load tenant and the stubs every user shares (one channel per service)."""
    o = environment.parsed_options  # type: ignore[attr-defined]
    addresses = tenant.cell_addresses(o.cell)
    load = tenant.create(
        addresses,
        tenant.admin_key(o.admin_key_file),
        o.campaign,
        o.agents,
        o.standby_agents,
        o.agent_capacity,
    )
    print(f"load tenant {load.tenant_id} (run {load.run_id}): synthetic traffic", file=sys.stderr)
    metadata = (
        ("authorization", f"Bearer {load.key}"),
        ("baggage", tenant.baggage(load.run_id, o.campaign)),
    )
    Workload.caller = Caller(environment, metadata)
    Workload.tenant_id = load.tenant_id
    Workload.options = o
    Workload.agents = load.agents
    Workload.standby = load.standby or load.agents
    Workload.media = media_rpc.MediaServiceStub(grpc.insecure_channel(addresses["media"]))
    Workload.acd = acd_rpc.AcdServiceStub(grpc.insecure_channel(addresses["acd"]))


@events.quitting.add_listener
def _verdict(environment: object, **_: object) -> None:
    table, passed = summary(environment)
    print(table, file=sys.stderr)
    environment.process_exit_code = 0 if passed else 1  # type: ignore[attr-defined]

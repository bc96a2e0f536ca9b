"""The `lianluo` command: serve a service, migrate, run the local platform, manage the dev stack."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import sys
from types import ModuleType
from typing import TypeVar

import grpc
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from lianluo.runtime.service import ServiceSpec, migrate
from lianluo.runtime.settings import KafkaSecuritySettings, ServiceSettings
from lianluo.services import SERVICES

_S = TypeVar("_S", bound=BaseSettings)


def _service(name: str) -> ModuleType:
    return importlib.import_module(SERVICES[name])


def _settings(spec: ServiceSpec) -> ServiceSettings:
    """Read the service's settings, or exit naming every missing or bad variable."""
    return _read_settings(spec.settings, spec.name)


def _read_settings(settings: type[_S], command: str) -> _S:
    try:
        return settings()
    except ValidationError as error:
        prefix = settings.model_config.get("env_prefix", "")
        lines = [
            f"  {prefix}{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in error.errors()
        ]
        print(f"lianluo {command}: bad configuration:", *lines, sep="\n", file=sys.stderr)
        raise SystemExit(2) from None


def _serve(args: argparse.Namespace) -> int:
    module = _service(args.service)
    settings = _settings(module.SPEC)
    # After start-up SIGINT and SIGTERM stop the service in order; before it, just exit.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(module.serve(settings))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    for name in args.services or list(SERVICES):
        spec: ServiceSpec = _service(name).SPEC
        applied = asyncio.run(migrate(spec, _settings(spec)))
        print(f"{name}: {len(applied)} migration(s) applied" + "".join(f"\n  {a}" for a in applied))
    return 0


def _dev(args: argparse.Namespace) -> int:
    from lianluo.devstack import infra

    config = infra.StackConfig.from_env()
    try:
        if args.action == "up":
            infra.up(config)
        elif args.action == "down":
            infra.down(config)
        for component in infra.status(config):
            state = f"running (pid {component.pid})" if component.running else "stopped"
            print(f"{component.name:10} {component.address:22} {state}  {component.detail}")
    except infra.InfraError as error:
        print(f"lianluo dev {args.action}: {error}", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    from lianluo.devstack import platform

    code: int = platform.main(
        demo=not args.no_demo, replicas=args.replicas, first_port=args.first_port
    )
    return code


def _replicas(value: str) -> dict[str, int]:
    """`media=2,acd=2`: how many processes of each cell service `lianluo run` starts."""
    from lianluo.services import CELL_SERVICES

    counts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, count = item.partition("=")
        if name not in CELL_SERVICES:
            raise argparse.ArgumentTypeError(
                f"unknown service {name!r}; one of {', '.join(CELL_SERVICES)}"
            )
        if not count.isdigit() or not 1 <= int(count) <= 8:
            raise argparse.ArgumentTypeError(f"{name}: the count must be 1 to 8, not {count!r}")
        if name == "voice" and int(count) > 1:
            # Its SIP and RTP ports, and a phone's registration with its calls, are one process's.
            raise argparse.ArgumentTypeError("voice: a cell runs one voice process")
        counts[name] = int(count)
    return counts


def _terminal(args: argparse.Namespace) -> int:
    import getpass
    import json

    from lianluo.devstack import infra, terminal

    state = infra.StackConfig.from_env().state_dir
    cell = terminal.load_cell(state)
    demo = json.loads((state / "demo.json").read_text()) if (state / "demo.json").exists() else {}
    if args.command == "customer":
        key = args.key or demo.get("key", "")
        tenant = args.tenant or demo.get("tenant_id", "")
        if not key or not tenant:
            print("lianluo: give --tenant and --key (no demo tenant found)", file=sys.stderr)
            return 2
    else:
        tenant = args.tenant or demo.get("tenant", "")
        if not tenant:
            print(
                "lianluo: give --tenant, the tenant's name (no demo tenant found)", file=sys.stderr
            )
            return 2
        password = os.environ.get("LIANLUO_PASSWORD") or (
            demo.get("password", "") if not args.tenant else ""
        )
        if not password:
            if not sys.stdin.isatty():
                print("lianluo agent: set LIANLUO_PASSWORD (no terminal to ask)", file=sys.stderr)
                return 2
            password = getpass.getpass(f"password of {args.login}: ")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            if args.command == "customer":
                asyncio.run(terminal.customer(cell, key, tenant, args.flow, args.name))
            else:
                asyncio.run(terminal.agent(cell, tenant, args.login, password))
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.UNAVAILABLE:
            print(
                f"lianluo {args.command}: the local cell does not answer; start it with "
                "`make run` and try again",
                file=sys.stderr,
            )
        else:
            print(
                f"lianluo {args.command}: {error.code().name}: {error.details()}", file=sys.stderr
            )
        return 1
    return 0


def _operator(args: argparse.Namespace) -> int:
    from lianluo.operator.__main__ import main as operator_main

    argv = [f"--namespace={ns}" for ns in args.namespace]
    argv += [f"--liveness={args.liveness}"] + (["--verbose"] if args.verbose else [])
    return operator_main(argv)


def _teardown(args: argparse.Namespace) -> int:
    """Delete every Tenant and Cell of the namespace through the running operator, and drop
    the cells' databases when asked (the chart's opt-in uninstall hook)."""
    from lianluo.operator.kube import Kube
    from lianluo.operator.runtime import login
    from lianluo.operator.teardown import Databases, TeardownError, teardown

    databases = None
    if args.drop_databases:
        url = os.environ.get("LIANLUO_OPERATOR_DATABASE_ADMIN_URL", "")
        if not url:
            print(
                "lianluo teardown: --drop-databases needs LIANLUO_OPERATOR_DATABASE_ADMIN_URL "
                "(the operator's admin URL)",
                file=sys.stderr,
            )
            return 2
        prefix = os.environ.get("LIANLUO_OPERATOR_DATABASE_PREFIX", "lianluo_")
        databases = Databases(url, prefix)

    async def run() -> None:
        kube = Kube.from_connection(login())
        try:
            await teardown(
                kube, args.namespace, databases, args.timeout, lambda line: print(line, flush=True)
            )
        finally:
            await kube.close()

    try:
        asyncio.run(run())
    except TeardownError as error:
        print(f"lianluo teardown: {error}", file=sys.stderr)
        return 1
    return 0


def _dead_letters(args: argparse.Namespace) -> int:
    """List, show or replay the cell's dead letters (see docs/operations.md)."""
    import json

    from google.protobuf import json_format

    from lianluo.runtime import dead_letters
    from lianluo.runtime.kafka import Envelope, EventProducer

    bootstrap, prefix = args.bootstrap, args.prefix
    if not bootstrap:
        from lianluo.devstack import infra, platform

        bootstrap = infra.StackConfig.from_env().kafka_bootstrap
        prefix = prefix if prefix is not None else platform.TOPIC_PREFIX
    topic = f"{prefix or ''}{dead_letters.TOPIC}"
    # The cell's LIANLUO_KAFKA_* security settings, as its services use them.
    security = _read_settings(KafkaSecuritySettings, "dead-letters")

    async def act() -> int:
        letters = await dead_letters.read_all(bootstrap, topic, security=security)
        if args.action == "list":
            for d in letters:
                envelope = Envelope.FromString(d.value) if d.value else Envelope()
                print(
                    f"{d.ref:>8}  {d.time}  {d.source_topic}  {d.who}  {envelope.type or '?'}  "
                    f"tenant={envelope.tenant_id or '?'}  {d.error[:80]}"
                )
            print(f"{len(letters)} dead letter(s) on {topic}", file=sys.stderr)
            return 0
        chosen = letters if args.all else dead_letters.select(letters, args.refs)
        if args.action == "show":
            _import_event_types()
            for d in chosen:
                shown = {
                    "ref": d.ref,
                    "source": f"{d.source_topic}[{d.source_partition}]@{d.source_offset}",
                    "who": d.who,
                    "attempts": d.attempts,
                    "time": d.time,
                    "error": d.error,
                    "value_bytes": d.value_bytes,
                    "event": json_format.MessageToDict(Envelope.FromString(d.value))
                    if d.value
                    else "(not kept: over the record limit)",
                }
                print(json.dumps(shown, indent=2, ensure_ascii=False))
            return 0
        producer = EventProducer(bootstrap, client_id="lianluo-dead-letters", security=security)
        await producer.start()
        try:
            for d in chosen:
                if not d.value or d.source_partition < 0:
                    print(f"{d.ref}: skipped, its record was not kept", file=sys.stderr)
                    continue
                await producer.send_to(
                    d.source_topic, d.source_partition, d.key, d.value, d.headers
                )
                print(f"{d.ref}: replayed to {d.source_topic}[{d.source_partition}]")
        finally:
            await producer.stop()
        return 0

    if args.action != "list" and not (args.refs or args.all):
        print(f"lianluo dead-letters {args.action}: name letters (P:O) or --all", file=sys.stderr)
        return 2
    try:
        return asyncio.run(act())
    except KeyError as error:
        print(f"lianluo dead-letters: {error.args[0]}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError) as error:
        print(f"lianluo dead-letters: cannot read {topic} at {bootstrap}: {error}", file=sys.stderr)
        return 1


def _call(args: argparse.Namespace) -> int:
    from lianluo.devstack import call

    key = args.key
    if args.admin:
        from lianluo.devstack import infra

        key = (infra.StackConfig.from_env().state_dir / "admin-key").read_text().strip()
    return call.main(args.address, args.method, call.request_text(args.json), key, args.timeout)


def _audit(args: argparse.Namespace) -> int:
    """Export a tenant's audit log: every entry, oldest first, one JSON object per line."""
    import json

    from google.protobuf import json_format

    from lianluo.common.v1 import common_pb2
    from lianluo.tenants.v1 import tenants_pb2 as pb
    from lianluo.tenants.v1 import tenants_pb2_grpc as rpc

    if not args.key:
        print("lianluo audit: give --key (or LIANLUO_KEY): one with audit:read", file=sys.stderr)
        return 2
    metadata = (("authorization", f"Bearer {args.key}"),)
    with grpc.insecure_channel(args.address) as channel:
        stub = rpc.AuditServiceStub(channel)
        token = ""
        try:
            while True:
                page = stub.ListAuditEntries(
                    pb.ListAuditEntriesRequest(
                        tenant_id=args.tenant,
                        page=common_pb2.PageRequest(page_size=500, page_token=token),
                    ),
                    metadata=metadata,
                    timeout=args.timeout,
                )
                for entry in page.entries:
                    print(json.dumps(json_format.MessageToDict(entry), ensure_ascii=False))
                token = page.page.next_page_token
                if not token:
                    return 0
        except grpc.RpcError as error:
            print(f"lianluo audit: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1


def _import_event_types() -> None:
    """Register every event payload type, so an envelope's payload prints as JSON."""
    import pkgutil

    import lianluo.events.v1 as events

    for module in pkgutil.iter_modules(events.__path__):
        if module.name.endswith("_pb2"):
            importlib.import_module(f"{events.__name__}.{module.name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lianluo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run one service until SIGTERM")
    serve.add_argument("service", choices=sorted(SERVICES))
    serve.set_defaults(func=_serve)

    mig = commands.add_parser("migrate", help="apply migrations and create topics")
    mig.add_argument("services", nargs="*", choices=[[], *sorted(SERVICES)], default=[])
    mig.set_defaults(func=_migrate)

    dev = commands.add_parser("dev", help="the local Postgres and Kafka-protocol broker")
    dev.add_argument("action", choices=["up", "down", "status"])
    dev.set_defaults(func=_dev)

    run = commands.add_parser("run", help="the whole local platform, until Ctrl-C")
    run.add_argument("--no-demo", action="store_true", help="skip the demo")
    run.add_argument(
        "--replicas",
        type=_replicas,
        default={},
        metavar="SERVICE=N,...",
        help="processes per service, e.g. media=2,acd=2 (default one of each)",
    )
    run.add_argument(
        "--first-port",
        type=int,
        default=50051,
        help="the first service's port; the others follow (default 50051)",
    )
    run.set_defaults(func=_run)

    op = commands.add_parser("operator", help="the cell operator (kopf), until SIGTERM")
    op.add_argument("--namespace", action="append", default=[], help="watch only this namespace")
    op.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="'' for none")
    op.add_argument("--verbose", action="store_true")
    op.set_defaults(func=_operator)

    td = commands.add_parser(
        "teardown",
        help="delete every Tenant and Cell of a namespace through the running operator",
    )
    td.add_argument("--namespace", required=True)
    td.add_argument(
        "--drop-databases",
        action="store_true",
        help="then drop the cells' databases and roles (LIANLUO_OPERATOR_DATABASE_ADMIN_URL)",
    )
    td.add_argument("--timeout", type=float, default=600, help="seconds (default 600)")
    td.set_defaults(func=_teardown)

    dl = commands.add_parser(
        "dead-letters", help="list, show or replay events that could not be applied or published"
    )
    dl.add_argument("action", choices=["list", "show", "replay"])
    dl.add_argument("refs", nargs="*", metavar="P:O", help="dead letters by partition:offset")
    dl.add_argument("--all", action="store_true", help="show or replay every dead letter")
    dl.add_argument(
        "--bootstrap",
        default=os.environ.get("LIANLUO_KAFKA_BOOTSTRAP_SERVERS", ""),
        help="the cell's brokers (default: LIANLUO_KAFKA_BOOTSTRAP_SERVERS, else the local one)",
    )
    dl.add_argument(
        "--prefix",
        default=os.environ.get("LIANLUO_TOPIC_PREFIX"),
        help="the cell's topic prefix (default: LIANLUO_TOPIC_PREFIX, else the local cell's)",
    )
    dl.set_defaults(func=_dead_letters)

    cl = commands.add_parser(
        "call", help="call an RPC of a running service with JSON, found through reflection"
    )
    cl.add_argument("address", help="host:port of the service, for example 127.0.0.1:50051")
    cl.add_argument(
        "method",
        help="Service/Method, for example lianluo.tenants.v1.TenantService/"
        "ListTenants; or `list` for the services",
    )
    cl.add_argument("json", nargs="?", default="{}", help="the request as JSON; - reads stdin")
    cl.add_argument(
        "--key", default=os.environ.get("LIANLUO_KEY", ""), help="API key (LIANLUO_KEY)"
    )
    cl.add_argument("--admin", action="store_true", help="use the local cell's admin key")
    cl.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    cl.set_defaults(func=_call)

    audit = commands.add_parser(
        "audit", help="export a tenant's audit log as JSON lines (who changed what, when, where)"
    )
    audit.add_argument("address", help="the tenants service, for example 127.0.0.1:50051")
    audit.add_argument("--tenant", default="", help="the tenant id (empty: the admin keys')")
    audit.add_argument(
        "--key", default=os.environ.get("LIANLUO_KEY", ""), help="a key with audit:read"
    )
    audit.add_argument("--timeout", type=float, default=10.0, help="seconds per page")
    audit.set_defaults(func=_audit)

    customer = commands.add_parser("customer", help="chat as a customer with the running platform")
    customer.add_argument("--tenant", default="", help="tenant id (default: the demo tenant)")
    customer.add_argument(
        "--key",
        default="",
        help="a key with sessions:write, to mint the customer's session (default: the demo key)",
    )
    customer.add_argument("--flow", default="card-services")
    customer.add_argument("--name", default="visitor")
    customer.set_defaults(func=_terminal)
    person = commands.add_parser(
        "agent", help="sign in as an agent (a person) and answer offers on the running platform"
    )
    person.add_argument("login", help="the person's name, for example li.wei")
    person.add_argument("--tenant", default="", help="the tenant's name (default: the demo's)")
    person.set_defaults(func=_terminal)
    # The password comes from LIANLUO_PASSWORD, the demo's, or a prompt: never an argument,
    # which other users of the machine could read in the process list.

    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())

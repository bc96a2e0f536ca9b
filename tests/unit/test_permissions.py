"""Every RPC of every service declares the permission it needs, next to its handler, and
docs/security.md lists them as declared. Regenerate the table after a change with:
    LIANLUO_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/unit/test_permissions.py
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lianluo.services
from lianluo.runtime import auth
from lianluo.runtime.grpc_server import declared_rules

DOC = Path(__file__).parents[2] / "docs" / "security.md"
BEGIN, END = "<!-- permissions: begin -->", "<!-- permissions: end -->"


def generated_classes() -> Iterator[type]:
    """The classes each service's gRPC adapter holds, its generated servicer bases among them
    (the console has none: it serves people's pages over HTTP, and gRPC health only)."""
    for module in pkgutil.iter_modules(lianluo.services.__path__):
        name = f"lianluo.services.{module.name}.grpc_api"
        if module.name == "console":
            assert importlib.util.find_spec(name) is None
            continue
        api = importlib.import_module(name)
        yield from (value for value in vars(api).values() if isinstance(value, type))


def proto_of(generated: type) -> Any:
    return importlib.import_module(generated.__module__.removesuffix("_grpc"))


def servicers() -> dict[str, type]:
    """Each proto service of the project, by full name, and the class that implements it."""
    found: dict[str, type] = {}
    for value in generated_classes():
        for base in value.__mro__[1:]:
            name = base.__name__
            if name.endswith("Servicer") and base.__module__.endswith("_pb2_grpc"):
                service = proto_of(base).DESCRIPTOR.services_by_name[name.removesuffix("Servicer")]
                found.setdefault(service.full_name, value)
    return found


def every_proto_service() -> set[str]:
    return {
        s.full_name
        for value in generated_classes()
        if value.__module__.endswith("_pb2_grpc")
        for s in proto_of(value).DESCRIPTOR.services_by_name.values()
    }


def test_every_rpc_of_every_service_declares_a_known_permission() -> None:
    implemented = servicers()
    assert every_proto_service() <= set(implemented), "a proto service has no servicer"
    for full_name, servicer in implemented.items():
        for method, rule in declared_rules(servicer, full_name).items():
            assert rule.permission in auth.PERMISSIONS, method


def test_an_rpc_without_a_permission_stops_the_start() -> None:
    full_name, servicer = next(iter(servicers().items()))
    bare = type("Bare", (servicer.__mro__[1],), {})  # the generated base: nothing declared
    with pytest.raises(RuntimeError, match="declares no permission"):
        declared_rules(bare, full_name)


def table() -> str:
    by_permission: dict[str, list[str]] = {p: [] for p in auth.PERMISSIONS}
    for full_name, servicer in sorted(servicers().items()):
        for method, rule in declared_rules(servicer, full_name).items():
            service, _, rpc = method.lstrip("/").rpartition("/")
            by_permission[rule.permission].append(f"`{service.rsplit('.', 1)[-1]}/{rpc}`")
    rows = ["| permission | what it allows | RPCs |", "|---|---|---|"]
    for permission, what in auth.PERMISSIONS.items():
        rows.append(f"| `{permission}` | {what} | {', '.join(by_permission[permission])} |")
    return "\n".join(rows)


def test_the_permission_table_in_the_docs_is_the_declared_one() -> None:
    text = DOC.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    generated = f"{head}{BEGIN}\n{table()}\n{END}{tail}"
    if os.environ.get("LIANLUO_UPDATE_GOLDEN") == "1":
        DOC.write_text(generated)
    assert text == generated, "regenerate with LIANLUO_UPDATE_GOLDEN=1 (see this module)"

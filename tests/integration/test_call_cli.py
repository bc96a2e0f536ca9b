"""`lianluo call`, the README's way to reach the API: reflection, JSON in and out, clear errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import pytest
from conftest import ADMIN_KEY, Served

pytestmark = pytest.mark.integration


async def call(*args: str) -> subprocess.CompletedProcess[str]:
    # Asynchronously: the tenants service answers from this test's own event loop.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lianluo.cli", "call", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    return subprocess.CompletedProcess(args, process.returncode or 0, out.decode(), err.decode())


async def test_list_health_and_a_create_with_json(tenants_service: Served) -> None:
    address = tenants_service.address
    listed = await call(address, "list")
    assert listed.returncode == 0, listed.stderr
    assert "lianluo.tenants.v1.TenantService" in listed.stdout.split()
    health = await call(address, "grpc.health.v1.Health/Check")
    assert json.loads(health.stdout) == {"status": "SERVING"}
    name = f"acme-{uuid.uuid4().hex[:6]}"
    body = {"tenant": {"name": name, "plan": "PLAN_STARTER", "expected_concurrent_sessions": 50,
                       "channels": ["CHANNEL_WEB"]}}  # fmt: skip
    create = "lianluo.tenants.v1.TenantService/CreateTenant"
    created = await call("--key", ADMIN_KEY, address, create, json.dumps(body))
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["name"] == name


async def test_mistakes_are_named(tenants_service: Served) -> None:
    address = tenants_service.address
    create = "lianluo.tenants.v1.TenantService/CreateTenant"
    bad = await call("--key", ADMIN_KEY, address, create, '{"tenant": {"name": "a\\u0000b"}}')
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT" in bad.stderr and "tenant.name" in bad.stderr
    unknown = await call(address, "lianluo.tenants.v1.TenantService/Nope")
    assert unknown.returncode == 1 and "no method" in unknown.stderr
    not_json = await call(address, "lianluo.tenants.v1.TenantService/ListTenants", "{nope")
    assert not_json.returncode == 1 and "is not a lianluo.tenants.v1.ListTenantsRequest" in (
        not_json.stderr
    )
    nobody = await call("127.0.0.1:1", "list", "--timeout", "2")
    assert nobody.returncode == 1 and "nothing answers at 127.0.0.1:1" in nobody.stderr

"""What the tenants service publishes: one `tenant.config` record per configuration change.

Records go through the outbox in the transaction of the change. The key is
"<tenant>/<kind>/<id>", so compaction keeps each resource's latest state; the partition comes
from the tenant id, so a tenant's changes arrive in the order they were made.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
from google.protobuf.message import Message

from lianluo.events.v1 import tenant_config_pb2
from lianluo.runtime import contract, outbox
from lianluo.tenants.v1 import tenants_pb2 as pb

PRODUCER = "tenants"


async def publish_change(
    conn: asyncpg.Connection,
    topic: str,
    *,
    tenant_id: str,
    kind: str,
    resource_id: str,
    revision: int,
    resource: Message | None,
) -> None:
    """Queue the change of one resource; `resource` None announces its deletion."""
    change = tenant_config_pb2.TenantConfigChanged(
        kind=kind, resource_id=resource_id, revision=revision, deleted=resource is None
    )
    if resource is not None:
        getattr(change, kind).CopyFrom(resource)
    envelope = contract.envelope(contract.TENANT_CONFIG, PRODUCER, tenant_id, change)
    await outbox.enqueue(conn, topic, envelope, key=f"{tenant_id}/{kind}/{resource_id}")


def key_message(row: dict[str, Any]) -> pb.ApiKey:
    """The API view of an api_keys row (never the hash)."""
    key = pb.ApiKey(
        id=row["id"],
        tenant_id=str(row["tenant_id"] or ""),
        scope=row["scope"],
        display_name=row["display_name"],
    )
    key.create_time.FromDatetime(row["created_at"])
    if row["revoked_at"] is not None:
        key.revoke_time.FromDatetime(row["revoked_at"])
    if row["expires_at"] is not None:
        key.expire_time.FromDatetime(row["expires_at"])
    key.permissions.extend(row["permissions"] or ())
    return key


async def publish_key(conn: asyncpg.Connection, topic: str, row: dict[str, Any]) -> None:
    """Announce a key, with its hash, so other services can check keys without a call."""
    state = tenant_config_pb2.ApiKeyState(
        api_key=key_message(row), secret_sha256=row["secret_sha256"]
    )
    await publish_change(
        conn,
        topic,
        tenant_id=str(row["tenant_id"] or ""),
        kind="api_key",
        resource_id=row["id"],
        revision=2 if row["revoked_at"] else 1,
        resource=state,
    )


def now() -> datetime:
    return datetime.now(UTC)

"""What the tenants service publishes: one `tenant.config` record per configuration change;
and what it consumes: `recording.purged` and `recording.objects_deleted`, into the audit log.

Records go through the outbox in the transaction of the change. The key is
"<tenant>/<kind>/<id>", so compaction keeps each resource's latest state; the partition comes
from the tenant id, so a tenant's changes arrive in the order they were made.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from google.protobuf.message import Message

from lianluo.events.v1 import recording_pb2, tenant_config_pb2
from lianluo.runtime import auth, contract, outbox
from lianluo.runtime.kafka import Envelope
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
    """Queue the change of one resource; `resource` None announces its deletion. The audit
    log gets its entry in the same transaction: every change of configuration and keys passes
    here, so none is left out."""
    await _audit(conn, tenant_id, kind, resource_id, revision, resource is None)
    change = tenant_config_pb2.TenantConfigChanged(
        kind=kind, resource_id=resource_id, revision=revision, deleted=resource is None
    )
    if resource is not None:
        getattr(change, kind).CopyFrom(resource)
    envelope = contract.envelope(contract.TENANT_CONFIG, PRODUCER, tenant_id, change)
    await outbox.enqueue(conn, topic, envelope, key=f"{tenant_id}/{kind}/{resource_id}")


async def _audit(
    conn: asyncpg.Connection,
    tenant_id: str,
    kind: str,
    resource_id: str,
    revision: int,
    deleted: bool,
) -> None:
    principal, call = auth.current_principal_or_none(), auth.current_call()
    await conn.execute(
        "insert into audit_log (tenant_id, api_key_id, method, peer, kind, resource_id, "
        "revision, deleted, user_id) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        uuid.UUID(tenant_id) if tenant_id else None,
        principal.key_id if principal else "",
        call.method if call else "",
        call.peer if call else "",
        kind,
        resource_id,
        revision,
        deleted,
        principal.user_id if principal else "",
    )


async def audit_unpublished(
    conn: asyncpg.Connection,
    tenant_id: str,
    kind: str,
    resource_id: str,
    revision: int,
    deleted: bool,
) -> None:
    """The audit entry of a change that is not published (the knowledge base, which clients
    read through its API), in the transaction of the change."""
    await _audit(conn, tenant_id, kind, resource_id, revision, deleted)


def audit_message(row: asyncpg.Record) -> pb.AuditEntry:
    entry = pb.AuditEntry(
        id=str(row["id"]),
        tenant_id=str(row["tenant_id"] or ""),
        api_key_id=row["api_key_id"],
        method=row["method"],
        peer=row["peer"],
        kind=row["kind"],
        resource_id=row["resource_id"],
        revision=row["revision"],
        deleted=row["deleted"],
        user_id=row["user_id"],
    )
    entry.time.FromDatetime(row["at"])
    return entry


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


async def audit_purge(
    conn: asyncpg.Connection, envelope: Envelope, event: recording_pb2.RecordingEvent
) -> None:
    """A record purged (`recording`), or its objects deleted from the store and checked gone
    (`recording_objects`): the tenant's audit log says so, with the event that told it."""
    kind = "recording" if event.WhichOneof("event") == "purged" else "recording_objects"
    await conn.execute(
        "insert into audit_log (tenant_id, api_key_id, method, peer, kind, resource_id, "
        "revision, deleted, user_id) values ($1, '', $2, $3, $4, $5, 0, true, '')",
        uuid.UUID(envelope.tenant_id),
        envelope.type,
        envelope.producer,
        kind,
        event.interaction_id,
    )


def handlers() -> contract.Handlers:
    """What the tenants service consumes: the purges it records in the audit log."""
    on = contract.Handlers(PRODUCER)
    on.on("recording.purged", audit_purge)
    on.on("recording.objects_deleted", audit_purge)
    return on

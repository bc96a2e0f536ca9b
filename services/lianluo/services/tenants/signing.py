"""The tenants' signing keys: made, chosen, rotated, and announced on `tenant.config`.

Each tenant signs its tokens with keys of its own, so a token of one tenant can never verify
for another. Only the public halves leave this service. A new key signs only once it has had
time to reach every service (PROPAGATION), and a retired key keeps verifying until the tokens
it signed have expired, unless it is retired at once on purpose.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg

from lianluo.events.v1 import tenant_config_pb2
from lianluo.runtime import tokens
from lianluo.services.tenants import events
from lianluo.services.tenants.repository import Repository

PROPAGATION = timedelta(seconds=30)
MAX_AGE = timedelta(days=30)
# A key replaced because of its age verifies the access tokens it signed until they expire.
AGED_OVERLAP = timedelta(seconds=tokens.ACCESS_TOKEN_SECONDS + tokens.LEEWAY_SECONDS)


def key_of(row: asyncpg.Record) -> tokens.SigningKey:
    return tokens.SigningKey(row["kid"], row["jwk"], row["retire_at"], bytes(row["private_pem"]))


async def publish(
    conn: asyncpg.Connection, topic: str, tid: uuid.UUID, row: asyncpg.Record
) -> None:
    """Announce one signing key's public half (and when it retires)."""
    public = tenant_config_pb2.SigningKey(kid=row["kid"], jwk=row["jwk"])
    if row["retire_at"] is not None:
        public.retire_time.FromDatetime(row["retire_at"])
    await events.publish_change(
        conn,
        topic,
        tenant_id=str(tid),
        kind="signing_key",
        resource_id=row["kid"],
        revision=1 if row["retire_at"] is None else 2,
        resource=public,
    )


async def add_key(
    conn: asyncpg.Connection, repo: Repository, topic: str, tid: uuid.UUID, now: datetime
) -> tokens.SigningKey:
    key = tokens.new_signing_key()
    await repo.insert_signing_key(conn, tid, key.kid, key.private_pem, key.jwk, now)
    await events.publish_change(
        conn,
        topic,
        tenant_id=str(tid),
        kind="signing_key",
        resource_id=key.kid,
        revision=1,
        resource=tenant_config_pb2.SigningKey(kid=key.kid, jwk=key.jwk),
    )
    return key


async def rotate(
    conn: asyncpg.Connection,
    repo: Repository,
    topic: str,
    tid: uuid.UUID,
    overlap: timedelta,
    now: datetime,
) -> tokens.SigningKey:
    """A new key; every other key retires after `overlap`."""
    await conn.execute("select pg_advisory_xact_lock(hashtext('signing:' || $1))", str(tid))
    key = await add_key(conn, repo, topic, tid, now)
    for row in await repo.retire_signing_keys(conn, tid, now + overlap, key.kid):
        await publish(conn, topic, tid, row)
    return key


async def signer(
    conn: asyncpg.Connection,
    repo: Repository,
    topic: str,
    tid: uuid.UUID,
    now: datetime,
    lifetime: timedelta,
) -> tokens.SigningKey:
    """The key that signs a token of `lifetime` now: the newest that every service has had time
    to learn and that verifies until the token expires (else the newest), after a rotation
    when the newest is too old."""
    rows = await repo.signing_keys(conn, tid)
    if not rows or rows[0]["created_at"] <= now - MAX_AGE:
        await rotate(conn, repo, topic, tid, AGED_OVERLAP, now)
        rows = await repo.signing_keys(conn, tid)
    usable = [
        r
        for r in rows
        if r["created_at"] <= now - PROPAGATION
        and (r["retire_at"] is None or r["retire_at"] >= now + lifetime)
    ]
    return key_of(usable[0] if usable else rows[0])

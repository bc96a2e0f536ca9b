"""Postgres access for the tenants service. Every query is scoped by the tenant id."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import asyncpg
from google.protobuf import json_format
from google.protobuf.message import Message

from lianluo.runtime.errors import FieldViolation, InvalidArgument
from lianluo.runtime.paging import decode_token, encode_token, page_size
from lianluo.services.tenants.domain import AGENT, KINDS, TENANT, USER, Kind
from lianluo.tenants.v1 import tenants_pb2 as pb

_SELECT = "select spec from resources where tenant_id = $1 and kind = $2 and id = $3"
_SELECT_FOR_UPDATE = _SELECT + " for update"


@dataclass(frozen=True)
class Page:
    size: int
    after: str | None


def parse_page(size: int, token: str, scope: str) -> Page:
    """Check a page request; the token is bound to the list it came from."""
    after = str(decode_token(token, scope)) if token else None
    return Page(page_size(size), after)


def next_token(scope: str, last: str) -> str:
    return encode_token(scope, last)


def parse_id(value: str, field: str) -> uuid.UUID | None:
    """A resource id, or None when it cannot be one (which then reads as not found)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        if not value:
            raise InvalidArgument([FieldViolation(field, "must be set")]) from None
        return None


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def from_json(kind: Kind, spec: dict[str, Any]) -> Message:
    return json_format.ParseDict(spec, kind.message())


class Repository:
    """Resources, their revisions and API keys."""

    async def lock_tenant(self, conn: asyncpg.Connection, tenant_id: uuid.UUID) -> bool:
        """Share-lock the tenant row so it cannot be deleted under a write; False if absent."""
        found = await conn.fetchval(
            "select true from resources where tenant_id = $1 and kind = 'tenant' and id = $1 "
            "for share",
            tenant_id,
        )
        return bool(found)

    async def insert(
        self,
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        kind: Kind,
        resource_id: uuid.UUID,
        name: str,
        message: Message,
        request_id: str | None,
        now: datetime,
    ) -> None:
        spec = to_json(message)
        await conn.execute(
            "insert into resources (tenant_id, kind, id, name, revision, spec, request_id, "
            "created_at, updated_at) values ($1, $2, $3, $4, 1, $5, $6, $7, $7)",
            tenant_id,
            kind.name,
            resource_id,
            name,
            spec,
            request_id,
            now,
        )
        await self._keep_revision(conn, tenant_id, kind, resource_id, 1, spec)

    async def replace(
        self,
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        kind: Kind,
        resource_id: uuid.UUID,
        revision: int,
        message: Message,
        now: datetime,
    ) -> None:
        spec = to_json(message)
        await conn.execute(
            "update resources set spec = $4, revision = $5, updated_at = $6 "
            "where tenant_id = $1 and kind = $2 and id = $3",
            tenant_id,
            kind.name,
            resource_id,
            spec,
            revision,
            now,
        )
        await self._keep_revision(conn, tenant_id, kind, resource_id, revision, spec)

    async def _keep_revision(
        self,
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        kind: Kind,
        resource_id: uuid.UUID,
        revision: int,
        spec: dict[str, Any],
    ) -> None:
        await conn.execute(
            "insert into resource_revisions (tenant_id, kind, id, revision, spec) "
            "values ($1, $2, $3, $4, $5)",
            tenant_id,
            kind.name,
            resource_id,
            revision,
            spec,
        )

    async def get(
        self,
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        kind: Kind,
        resource_id: uuid.UUID,
        *,
        for_update: bool = False,
    ) -> Message | None:
        query = _SELECT_FOR_UPDATE if for_update else _SELECT
        spec = await conn.fetchval(query, tenant_id, kind.name, resource_id)
        return None if spec is None else from_json(kind, spec)

    async def all_of(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID
    ) -> list[tuple[Kind, Message]]:
        """Every resource of the tenant, the tenant itself first."""
        rows = await conn.fetch(
            "select kind, spec from resources where tenant_id = $1 "
            "order by kind <> 'tenant', kind, id",
            tenant_id,
        )
        return [(KINDS[r["kind"]], from_json(KINDS[r["kind"]], r["spec"])) for r in rows]

    async def keys_of(self, conn: asyncpg.Connection, tenant_id: uuid.UUID) -> list[asyncpg.Record]:
        """Every API key of the tenant, revoked ones too."""
        rows: list[asyncpg.Record] = await conn.fetch(
            "select * from api_keys where tenant_id = $1 order by id", tenant_id
        )
        return rows

    async def get_by_name(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, kind: Kind, name: str
    ) -> Message | None:
        spec = await conn.fetchval(
            "select spec from resources where tenant_id = $1 and kind = $2 and name = $3",
            tenant_id,
            kind.name,
            name,
        )
        return None if spec is None else from_json(kind, spec)

    async def get_by_request(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID | None, kind: Kind, request_id: str
    ) -> Message | None:
        """The resource a create with this request id made; tenant None for tenants."""
        spec = await conn.fetchval(
            "select spec from resources where ($1::uuid is null or tenant_id = $1) "
            "and kind = $2 and request_id = $3",
            tenant_id,
            kind.name,
            request_id,
        )
        return None if spec is None else from_json(kind, spec)

    async def get_revision(
        self,
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        kind: Kind,
        resource_id: uuid.UUID,
        revision: int,
    ) -> Message | None:
        spec = await conn.fetchval(
            "select spec from resource_revisions where tenant_id = $1 and kind = $2 and id = $3 "
            "and revision = $4",
            tenant_id,
            kind.name,
            resource_id,
            revision,
        )
        return None if spec is None else from_json(kind, spec)

    async def list_page(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID | None, kind: Kind, page: Page
    ) -> list[Message]:
        """One page in name order; `tenant_id` None lists tenants across the platform."""
        rows = await conn.fetch(
            "select spec from resources where kind = $1 and ($2::uuid is null or tenant_id = $2) "
            "and ($3::text is null or name > $3) order by name limit $4",
            kind.name,
            tenant_id,
            page.after,
            page.size,
        )
        return [from_json(kind, r["spec"]) for r in rows]

    async def search_agents(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, query: str, page: Page
    ) -> list[pb.Agent]:
        """The tenant's agents whose name, display name, a skill or an expertise contains
        `query`, case-insensitively, in name order."""
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = await conn.fetch(
            "select spec from resources where tenant_id = $1 and kind = 'agent' "
            "and ($3::text is null or name > $3) and (name ilike $2 "
            "or spec->>'display_name' ilike $2 "
            "or exists (select 1 from jsonb_array_elements(spec->'skills') s "
            "where s->>'skill' ilike $2) "
            "or exists (select 1 from jsonb_array_elements_text(spec->'expertise') e "
            "where e ilike $2)) order by name limit $4",
            tenant_id,
            f"%{escaped}%",
            page.after,
            page.size,
        )
        return [cast(pb.Agent, from_json(AGENT, r["spec"])) for r in rows]

    async def names_used(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, kind: Kind, names: list[str]
    ) -> set[str]:
        rows = await conn.fetch(
            "select name from resources where tenant_id = $1 and kind = $2 and name = any($3)",
            tenant_id,
            kind.name,
            names,
        )
        return {r["name"] for r in rows}

    async def referrers(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, kind: Kind, name: str
    ) -> list[str]:
        """ "kind/name" of the resources that refer to the resource `name` of `kind`."""
        if kind.name == "queue":
            rows = await conn.fetch(
                "select kind || '/' || name as ref from resources where tenant_id = $1 and ("
                "(kind = 'flow' and spec->'nodes' @> $2::jsonb) or "
                "(kind = 'queue' and spec->'overflow'->>'target_queue' = $3) or "
                "(kind = 'user' and spec->'queues' ? $3) or "
                "(kind = 'channel' and spec->>'queue' = $3)) order by 1",
                tenant_id,
                [{"route_to_queue": {"queue": name}}],
                name,
            )
        elif kind.name == "flow":
            rows = await conn.fetch(
                "select kind || '/' || name as ref from resources where tenant_id = $1 and "
                "kind = 'channel' and spec->>'flow' = $2 order by 1",
                tenant_id,
                name,
            )
        elif kind.name == "agent":
            rows = await conn.fetch(
                "select kind || '/' || name as ref from resources where tenant_id = $1 and "
                "kind = 'user' and spec->>'agent' = $2 order by 1",
                tenant_id,
                name,
            )
        elif kind.name == "notification_template":
            rows = await conn.fetch(
                "select kind || '/' || name as ref from resources where tenant_id = $1 and "
                "kind = 'notification_rule' and spec->>'template' = $2 order by 1",
                tenant_id,
                name,
            )
        else:
            return []
        return [r["ref"] for r in rows]

    async def delete(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, kind: Kind, resource_id: uuid.UUID
    ) -> bool:
        deleted = await conn.fetchval(
            "delete from resources where tenant_id = $1 and kind = $2 and id = $3 returning true",
            tenant_id,
            kind.name,
            resource_id,
        )
        return bool(deleted)

    async def delete_tenant(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID
    ) -> list[tuple[str, uuid.UUID]]:
        """Delete everything the tenant owns; return (kind, id) of every resource removed."""
        rows = await conn.fetch(
            "delete from resources where tenant_id = $1 returning kind, id", tenant_id
        )
        for statement in (
            "delete from resource_revisions where tenant_id = $1",
            "delete from credentials where tenant_id = $1",
            "delete from refresh_tokens where tenant_id = $1",
            "delete from signing_keys where tenant_id = $1",
            "delete from knowledge_articles where tenant_id = $1",
            "delete from canned_responses where tenant_id = $1",
            "delete from audio where tenant_id = $1",
        ):
            await conn.execute(statement, tenant_id)
        return [(r["kind"], r["id"]) for r in rows]

    async def count(self, conn: asyncpg.Connection, tenant_id: uuid.UUID, kind: Kind) -> int:
        found: int = await conn.fetchval(
            "select count(*) from resources where tenant_id = $1 and kind = $2",
            tenant_id,
            kind.name,
        )
        return found

    # ------------------------------------------------------------------ people

    async def tenant_by_name(self, conn: asyncpg.Connection, name: str) -> Message | None:
        """A tenant by its platform-wide name (signing in names the tenant, not its id)."""
        spec = await conn.fetchval(
            "select spec from resources where kind = 'tenant' and name = $1", name
        )
        return None if spec is None else from_json(TENANT, spec)

    async def user_by_subject(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, subject: str
    ) -> Message | None:
        spec = await conn.fetchval(
            "select spec from resources where tenant_id = $1 and kind = 'user' "
            "and spec->>'external_subject' = $2",
            tenant_id,
            subject,
        )
        return None if spec is None else from_json(USER, spec)

    async def credentials(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, user_id: uuid.UUID
    ) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await conn.fetchrow(
            "select * from credentials where tenant_id = $1 and user_id = $2 for update",
            tenant_id,
            user_id,
        )
        return row

    async def set_credentials(
        self,
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        user_id: uuid.UUID,
        *,
        password_hash: str | None = None,
        failed_logins: int = 0,
        locked_until: datetime | None = None,
    ) -> None:
        """Store the lockout state, and a new password hash when one is given."""
        await conn.execute(
            "insert into credentials (tenant_id, user_id, password_hash, failed_logins, "
            "locked_until) values ($1, $2, $3, $4, $5) on conflict (tenant_id, user_id) do "
            "update set password_hash = coalesce(excluded.password_hash, "
            "credentials.password_hash), failed_logins = excluded.failed_logins, "
            "locked_until = excluded.locked_until",
            tenant_id,
            user_id,
            password_hash,
            failed_logins,
            locked_until,
        )

    async def forget_credentials(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, user_id: uuid.UUID
    ) -> None:
        await conn.execute(
            "delete from credentials where tenant_id = $1 and user_id = $2", tenant_id, user_id
        )
        await conn.execute(
            "delete from refresh_tokens where tenant_id = $1 and user_id = $2", tenant_id, user_id
        )

    async def insert_refresh(self, conn: asyncpg.Connection, row: dict[str, Any]) -> None:
        await conn.execute(
            "insert into refresh_tokens (id, tenant_id, user_id, secret_sha256, created_at, "
            "expires_at) values ($1, $2, $3, $4, $5, $6)",
            row["id"],
            row["tenant_id"],
            row["user_id"],
            row["secret_sha256"],
            row["created_at"],
            row["expires_at"],
        )

    async def refresh_token(self, conn: asyncpg.Connection, token_id: str) -> asyncpg.Record | None:
        """A refresh token, locked (not tenant-scoped by nature: the token names the tenant)."""
        row: asyncpg.Record | None = await conn.fetchrow(
            "select * from refresh_tokens where id = $1 for update", token_id
        )
        return row

    async def revoke_refresh(
        self,
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        user_id: uuid.UUID,
        now: datetime,
        token_id: str | None = None,
    ) -> None:
        """Revoke one refresh token of a person, or all of theirs."""
        await conn.execute(
            "update refresh_tokens set revoked_at = $3 where tenant_id = $1 and user_id = $2 "
            "and revoked_at is null and ($4::text is null or id = $4)",
            tenant_id,
            user_id,
            now,
            token_id,
        )

    # ------------------------------------------------------------------ signing keys

    async def insert_signing_key(
        self,
        conn: asyncpg.Connection,
        tenant_id: uuid.UUID,
        kid: str,
        private_pem: bytes,
        jwk: str,
        now: datetime,
    ) -> None:
        await conn.execute(
            "insert into signing_keys (tenant_id, kid, private_pem, jwk, created_at) "
            "values ($1, $2, $3, $4, $5)",
            tenant_id,
            kid,
            private_pem,
            jwk,
            now,
        )

    async def signing_keys(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID
    ) -> list[asyncpg.Record]:
        """The tenant's keys that still verify, newest first."""
        rows: list[asyncpg.Record] = await conn.fetch(
            "select * from signing_keys where tenant_id = $1 and "
            "(retire_at is null or retire_at > now()) order by created_at desc, kid",
            tenant_id,
        )
        return rows

    async def retire_signing_keys(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, at: datetime, keep: str
    ) -> list[asyncpg.Record]:
        """Retire every key but `keep` at `at` (or earlier, when already due)."""
        rows: list[asyncpg.Record] = await conn.fetch(
            "update signing_keys set retire_at = least(coalesce(retire_at, $2), $2) "
            "where tenant_id = $1 and kid <> $3 and (retire_at is null or retire_at > $2) "
            "returning *",
            tenant_id,
            at,
            keep,
        )
        return rows

    # ------------------------------------------------------------------ audit

    async def list_audit(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID | None, page: Page
    ) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await conn.fetch(
            "select * from audit_log where tenant_id is not distinct from $1 "
            "and ($2::bigint is null or id > $2) order by id limit $3",
            tenant_id,
            int(page.after) if page.after is not None else None,
            page.size,
        )
        return rows

    # ------------------------------------------------------------------ API keys

    async def insert_key(self, conn: asyncpg.Connection, row: dict[str, Any]) -> None:
        await conn.execute(
            "insert into api_keys (id, tenant_id, scope, display_name, secret_sha256, "
            "request_id, created_at, expires_at, permissions) "
            "values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            row["id"],
            row["tenant_id"],
            row["scope"],
            row["display_name"],
            row["secret_sha256"],
            row["request_id"],
            row["created_at"],
            row["expires_at"],
            row["permissions"],
        )

    async def get_key(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID | None, key_id: str
    ) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await conn.fetchrow(
            "select * from api_keys where id = $1 and tenant_id is not distinct from $2",
            key_id,
            tenant_id,
        )
        return row

    async def get_key_by_request(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID | None, request_id: str
    ) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await conn.fetchrow(
            "select * from api_keys where request_id = $2 and tenant_id is not distinct from $1",
            tenant_id,
            request_id,
        )
        return row

    async def list_keys(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID | None, page: Page
    ) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await conn.fetch(
            "select * from api_keys where tenant_id is not distinct from $1 "
            "and ($2::text is null or id > $2) order by id limit $3",
            tenant_id,
            page.after,
            page.size,
        )
        return rows

    async def revoke_key(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID | None, key_id: str, now: datetime
    ) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await conn.fetchrow(
            "update api_keys set revoked_at = coalesce(revoked_at, $3) "
            "where id = $1 and tenant_id is not distinct from $2 returning *",
            key_id,
            tenant_id,
            now,
        )
        return row

    async def set_key_expiry(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID | None, key_id: str, at: datetime
    ) -> asyncpg.Record:
        row: asyncpg.Record = await conn.fetchrow(
            "update api_keys set expires_at = $3 "
            "where id = $1 and tenant_id is not distinct from $2 returning *",
            key_id,
            tenant_id,
            at,
        )
        return row

    async def revoke_tenant_keys(
        self, conn: asyncpg.Connection, tenant_id: uuid.UUID, now: datetime
    ) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await conn.fetch(
            "update api_keys set revoked_at = $2 where tenant_id = $1 and revoked_at is null "
            "returning *",
            tenant_id,
            now,
        )
        return rows

    async def resolve_key(self, conn: asyncpg.Connection, key_id: str) -> asyncpg.Record | None:
        """The key with its tenant's state, for authentication (not tenant-scoped by nature:
        the key itself is what names the tenant)."""
        row: asyncpg.Record | None = await conn.fetchrow(
            "select k.tenant_id, k.secret_sha256, k.revoked_at, k.expires_at, k.permissions, "
            "t.spec->>'state' as tenant_state "
            "from api_keys k left join resources t "
            "on t.kind = 'tenant' and t.id = k.tenant_id and t.tenant_id = k.tenant_id "
            "where k.id = $1",
            key_id,
        )
        return row

-- Who changed what, when and from where: one row per changed resource, written in the
-- transaction of the change. Kept when the tenant is deleted (the platform's record).
create table audit_log (
    id bigserial primary key,
    tenant_id uuid,
    at timestamptz not null default now(),
    api_key_id text not null,
    method text not null,
    peer text not null,
    kind text not null,
    resource_id text not null,
    revision bigint not null,
    deleted boolean not null
);
create index audit_log_tenant on audit_log (tenant_id, id);

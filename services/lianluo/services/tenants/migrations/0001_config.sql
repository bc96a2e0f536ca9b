-- Every tenant-owned configuration resource (tenants themselves included, owned by themselves)
-- is one row: its API message as JSON, with the columns needed to find it.
create table resources (
    tenant_id uuid not null,
    kind text not null,
    id uuid not null,
    name text not null,
    revision bigint not null,
    spec jsonb not null,
    request_id text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (tenant_id, kind, id)
);
create unique index resources_name_key on resources (tenant_id, kind, name);
-- Tenant names are unique across the platform, not just within a tenant.
create unique index resources_tenant_name_key on resources (name) where kind = 'tenant';
create unique index resources_request_key on resources (tenant_id, kind, request_id)
    where request_id is not null;
create unique index resources_tenant_request_key on resources (request_id)
    where kind = 'tenant' and request_id is not null;

-- Every revision ever stored; flows read their old versions from here.
create table resource_revisions (
    tenant_id uuid not null,
    kind text not null,
    id uuid not null,
    revision bigint not null,
    spec jsonb not null,
    created_at timestamptz not null default now(),
    primary key (tenant_id, kind, id, revision)
);

-- API keys: the SHA-256 of the secret only. Admin keys have no tenant.
create table api_keys (
    id text primary key,
    tenant_id uuid,
    scope smallint not null,
    display_name text not null,
    secret_sha256 text not null,
    request_id text,
    created_at timestamptz not null default now(),
    revoked_at timestamptz
);
create index api_keys_tenant on api_keys (tenant_id, created_at, id);
create unique index api_keys_request_key on api_keys (coalesce(tenant_id::text, ''), request_id)
    where request_id is not null;

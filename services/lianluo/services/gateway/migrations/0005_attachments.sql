-- Files and images customers sent, kept in the object store under `object_key`.
create table attachments (
    tenant_id uuid not null,
    id uuid not null,
    interaction_id uuid not null,
    name text not null,
    content_type text not null,
    size_bytes bigint not null,
    sha256 text not null,
    object_key text not null,
    created_at timestamptz not null default now(),
    primary key (tenant_id, id)
);

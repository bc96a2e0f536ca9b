-- The customer store: one row per customer, and each channel identity that resolves to one.
create table customers (
    tenant_id uuid not null,
    id uuid not null,
    display_name text not null default '',
    created_at timestamptz not null default now(),
    primary key (tenant_id, id)
);

create table identities (
    tenant_id uuid not null,
    kind smallint not null,
    value text not null,
    customer_id uuid not null,
    first_seen_at timestamptz not null default now(),
    primary key (tenant_id, kind, value),
    foreign key (tenant_id, customer_id) references customers (tenant_id, id)
);
create index identities_customer on identities (tenant_id, customer_id);

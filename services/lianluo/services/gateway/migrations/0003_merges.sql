-- A customer merged into another (their identities were found to be one person's) points at
-- it; the interactions the gateway started, by customer, for their history on every channel.
alter table customers add column merged_into uuid;
create table customer_interactions (
    tenant_id uuid not null,
    customer_id uuid not null,
    interaction_id uuid not null,
    channel smallint not null,
    started_at timestamptz not null default now(),
    primary key (tenant_id, interaction_id)
);
create index customer_interactions_customer on customer_interactions (tenant_id, customer_id, started_at);

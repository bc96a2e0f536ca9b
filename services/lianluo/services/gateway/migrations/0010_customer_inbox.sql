-- Notices in customers' inboxes in the tenant's app, by the tenant's id for the customer.
create table customer_inbox (
    tenant_id uuid not null,
    id uuid not null,
    -- The notification service's delivery: posted once, however often it is asked.
    delivery_id uuid not null,
    customer_id text not null,
    subject text not null,
    body text not null,
    created_at timestamptz not null default now(),
    read_at timestamptz,
    primary key (tenant_id, id),
    unique (tenant_id, delivery_id)
);
create index customer_inbox_by_customer on customer_inbox (tenant_id, customer_id, created_at desc, id desc);

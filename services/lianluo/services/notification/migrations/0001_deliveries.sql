-- The customer of each interaction, kept from `interaction.created` so the notice sent when it
-- ends knows whom it is for.
create table interaction_customers (
    tenant_id text not null,
    interaction_id text not null,
    customer_id text not null,
    display_name text not null,
    email text not null,
    phone text not null,
    attributes jsonb not null default '{}',
    created_at timestamptz not null default now(),
    primary key (tenant_id, interaction_id)
);
create index interaction_customers_customer on interaction_customers
    (tenant_id, customer_id, created_at desc);

-- One notice to one recipient, and its way to DELIVERED or FAILED.
create table deliveries (
    id uuid primary key,
    tenant_id text not null,
    -- Notify's request id; null for a delivery fired by a rule.
    request_id text,
    -- The rule that fired it and what it fired on (an interaction id, a business event id);
    -- null for Notify.
    rule_id text,
    rule_name text not null default '',
    source_key text,
    source_event_id text not null default '',
    template text not null,
    channel smallint not null,
    customer_id text not null default '',
    email_address text not null default '',
    phone_number text not null default '',
    webhook_url text not null default '',
    -- Kept to sign every attempt; never returned or published.
    signing_secret text not null default '',
    from_address text not null default '',
    subject text not null default '',
    body text not null,
    -- Extra fields for the webhook body (interaction id, resolution, event type, ...).
    context jsonb not null default '{}',
    status smallint not null,
    attempts int not null default 0,
    last_error text not null default '',
    next_attempt_at timestamptz,
    -- While SENDING: when the attempt counts as lost (its replica died).
    lease_until timestamptz,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    delivered_at timestamptz,
    -- A rule fires at most once per interaction or event, however often the event arrives.
    unique (tenant_id, rule_id, source_key),
    unique (tenant_id, request_id)
);
create index deliveries_due on deliveries (next_attempt_at) where status = 1;
create index deliveries_sending on deliveries (lease_until) where status = 2;
create index deliveries_newest on deliveries (tenant_id, created_at desc, id desc);

-- Business events as received on `business.event`, for threshold rules and for the record.
create table business_events (
    tenant_id text not null,
    event_id text not null,
    type text not null,
    customer_id text not null,
    metrics jsonb not null default '{}',
    attributes jsonb not null default '{}',
    occur_time timestamptz not null,
    received_at timestamptz not null default now(),
    primary key (tenant_id, event_id)
);

-- PublishBusinessEvent's request ids, so a retry publishes nothing new.
create table business_event_requests (
    tenant_id text not null,
    request_id text not null,
    event_id text not null,
    created_at timestamptz not null default now(),
    primary key (tenant_id, request_id)
);

-- Notices texted for the notification service, by its delivery id: a repeated request sends
-- nothing twice.
create table notices (
    tenant_id uuid not null,
    delivery_id uuid not null,
    phone_number text not null,
    parts int not null,
    sent_at timestamptz not null default now(),
    primary key (tenant_id, delivery_id)
);

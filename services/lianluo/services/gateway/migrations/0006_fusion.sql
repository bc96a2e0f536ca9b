-- Replies keep the message as the agent sent it (a MessageContent): each channel's sender fits
-- it to the channel when it goes out (docs/channels.md, "Media fusion"). `body` stays for the
-- replies queued before.
alter table replies add column content bytea;
alter table replies alter column body set default '';

-- Forms agents sent in the gateway's interactions: a customer on a channel that cannot show a
-- form fills it on a page the gateway serves, through a signed link.
create table forms (
    tenant_id uuid not null,
    message_id uuid not null,
    interaction_id uuid not null,
    form bytea not null,
    submitted_at timestamptz,
    created_at timestamptz not null default now(),
    primary key (tenant_id, message_id)
);

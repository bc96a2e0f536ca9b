-- The interactions the gateway started for a channel that answers asynchronously (e-mail, SMS):
-- who the customer is there, and how a reply threads.
create table conversations (
    tenant_id uuid not null,
    interaction_id uuid not null,
    channel_id uuid not null,
    -- The customer's address on the channel: an e-mail address, an E.164 number.
    customer_address text not null,
    customer_participant text not null,
    subject text not null default '',
    -- E-mail: the thread so far, oldest first (what a reply's References carries).
    thread text[] not null default '{}',
    created_at timestamptz not null default now(),
    primary key (tenant_id, interaction_id)
);
create index conversations_customer on conversations (tenant_id, channel_id, customer_address, created_at);

-- E-mail: every Message-ID seen or sent, and its interaction, so a reply continues it.
create table mail_messages (
    tenant_id uuid not null,
    message_id text not null,
    interaction_id uuid not null,
    primary key (tenant_id, message_id)
);

-- Agents' replies waiting to go out on the customer's channel, retried until they do.
create table replies (
    tenant_id uuid not null,
    id uuid not null,
    interaction_id uuid not null,
    body text not null,
    attempts integer not null default 0,
    due_at timestamptz not null default now(),
    last_error text not null default '',
    primary key (tenant_id, id)
);
create index replies_due on replies (due_at);

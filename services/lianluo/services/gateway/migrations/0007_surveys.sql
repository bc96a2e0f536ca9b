-- The satisfaction survey asked on the customer's own channel once a conversation a person
-- handled has closed (docs/channels.md, "Satisfaction survey"): one row per interaction asked,
-- so a redelivered `interaction.ended` asks once; `rated_at` once the customer has answered it.
create table surveys (
    tenant_id uuid not null,
    interaction_id uuid not null,
    asked_at timestamptz not null default now(),
    rated_at timestamptz,
    primary key (tenant_id, interaction_id)
);

-- The survey goes out as a reply does (the same retries, opt-out and signature); its text is
-- made when it is sent, so an e-mail's links are fresh.
alter table replies add column survey boolean not null default false;

-- The language the customer wrote their first message in, as far as the gateway can tell
-- ('' when it cannot): what the survey speaks.
alter table conversations add column language text not null default '';

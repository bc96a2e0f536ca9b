-- The provider's ids of the messages a notice went as: its delivery receipts name them.
alter table notices add column provider_ids text[] not null default '{}';
create index notices_by_provider_id on notices using gin (provider_ids);

-- The channel a contact came by, on its entry step, for reports by channel (0: not known,
-- for contacts logged before).
alter table contact_log add column channel smallint not null default 0;

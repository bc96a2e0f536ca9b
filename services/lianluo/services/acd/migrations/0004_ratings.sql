-- The customer's rating (CSAT, 1 to 5) on a "rated" step, for the reports.
alter table contact_log add column score smallint not null default 0;

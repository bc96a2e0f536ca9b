-- Scheduled notices, SMS, and what a notice about to go out is checked against: the SMS
-- channel it goes from, and the customer's own time zone and quiet hours ("" when they named
-- none: the tenant's policy applies).
alter table deliveries
    add column sms_channel text not null default '',
    add column time_zone text not null default '',
    add column quiet_hours text not null default '';

-- The notices a customer got lately: their daily count and repeated texts.
create index deliveries_recipient_recent on deliveries
    (tenant_id, channel, phone_number, email_address, updated_at desc)
    where status in (2, 3);

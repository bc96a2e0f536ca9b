-- When the SMS provider reported that a text reached the phone.
alter table deliveries add column receipt_at timestamptz;

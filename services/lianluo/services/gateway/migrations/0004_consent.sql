-- Consent: an identity whose owner said STOP (SMS) gets no more messages on it until START.
alter table identities add column opted_out_at timestamptz;

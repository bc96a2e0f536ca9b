-- Set while the IVR's last prompt asks for a secret (`Prompt.sensitive`): the customer's next
-- text is the answer, which goes to the IVR alone (`ivr.secret`) and is stored masked.
alter table interactions add column awaits_secret boolean not null default false;

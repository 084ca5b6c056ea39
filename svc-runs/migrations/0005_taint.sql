-- Taint follows the data (docs/adr/0120-taint-follows-the-data.md): a run that ingested
-- untrusted content says so, and so does its reply, so that a parent reading a sub-run's report,
-- a later run reading the chat's history and the Curator reading the chat carry the taint on.
ALTER TABLE runs ADD COLUMN tainted BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE messages ADD COLUMN untrusted BOOLEAN NOT NULL DEFAULT false;

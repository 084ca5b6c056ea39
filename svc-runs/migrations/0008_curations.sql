-- The Curator's queue (docs/src/adr/0242-2026-12-05-the-curator-sweeps-a-queue-of-chats.md): one
-- row per chat whose finished turns are not curated yet, written in the transaction that records
-- a successful run's end. svc-worker claims the rows whose turns have paused (a lease in
-- `not_before`) and removes them once curated, unless a turn finished meanwhile (`version`).
CREATE TABLE curations (
    tenant_id     TEXT NOT NULL,
    chat_id       TEXT NOT NULL,
    -- The latest turn (the summary's source), its model label and its owner (Identity, protobuf).
    run_id        TEXT NOT NULL,
    label         TEXT NOT NULL,
    identity      BYTEA NOT NULL,
    turns         INTEGER NOT NULL DEFAULT 1,
    version       BIGINT NOT NULL DEFAULT 1,
    -- When the first uncurated turn finished: the debounce counts from here.
    pending_since TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A claim's lease or a failed attempt's back-off: nobody claims the row before this.
    not_before    TIMESTAMPTZ,
    attempts      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, chat_id),
    FOREIGN KEY (tenant_id, chat_id) REFERENCES chats (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX curations_due ON curations (pending_since);

-- Tenant data like every table: the application role writes a row only inside its tenant's
-- transaction; the claims (every tenant's) run on the schema owner's pool, as maintenance does.
ALTER TABLE curations ENABLE ROW LEVEL SECURITY;
ALTER TABLE curations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON curations
    USING (tenant_id = current_setting('pa.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pa.tenant_id', true));

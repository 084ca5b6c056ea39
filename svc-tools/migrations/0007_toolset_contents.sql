-- A snapshot's tools are stored once per distinct toolset of a user (ADR 0217): the runs of a
-- chat whose toolset did not change share one row, written as the `Toolset` message
-- (protobuf), so neither a run's start nor a tool call's read parses JSON. Snapshots written
-- before keep their JSON columns (`tools`, `blocked`) and are read from them.
CREATE TABLE toolset_contents (
    tenant_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    -- SHA-256 of `toolset`.
    digest     BYTEA NOT NULL,
    toolset    BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id, digest)
);
ALTER TABLE toolset_contents ENABLE ROW LEVEL SECURITY;
ALTER TABLE toolset_contents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON toolset_contents
    USING (tenant_id = current_setting('pa.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pa.tenant_id', true));

ALTER TABLE toolset_snapshots ADD COLUMN content_digest BYTEA;
ALTER TABLE toolset_snapshots ALTER COLUMN tools DROP NOT NULL;
ALTER TABLE toolset_snapshots ALTER COLUMN blocked DROP NOT NULL;

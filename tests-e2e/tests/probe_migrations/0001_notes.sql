-- A table under row-level security for the tests that connect with pa-kit alone
-- (tls_connections, replica_start): the owner migrates it, the application role uses it.
CREATE TABLE notes (
    tenant_id TEXT NOT NULL,
    body TEXT NOT NULL
);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE notes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON notes
    USING (tenant_id = current_setting('pa.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pa.tenant_id', true));

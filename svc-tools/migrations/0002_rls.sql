-- Row-level security: see svc-memory's 0002_rls.sql. Fail closed without `pa.tenant_id`.
ALTER TABLE integrations ENABLE ROW LEVEL SECURITY;
ALTER TABLE integrations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON integrations
    USING (tenant_id = current_setting('pa.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pa.tenant_id', true));

ALTER TABLE devices ENABLE ROW LEVEL SECURITY;
ALTER TABLE devices FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON devices
    USING (tenant_id = current_setting('pa.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pa.tenant_id', true));

ALTER TABLE toolset_snapshots ENABLE ROW LEVEL SECURITY;
ALTER TABLE toolset_snapshots FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON toolset_snapshots
    USING (tenant_id = current_setting('pa.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pa.tenant_id', true));

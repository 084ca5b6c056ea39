-- Row-level security: the application role sees and writes only the rows of the tenant set in
-- `pa.tenant_id` for the transaction; with no tenant set it sees nothing (fail closed).
ALTER TABLE items ENABLE ROW LEVEL SECURITY;
ALTER TABLE items FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON items
    USING (tenant_id = current_setting('pa.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pa.tenant_id', true));

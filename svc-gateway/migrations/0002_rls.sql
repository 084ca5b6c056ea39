-- Row-level security (issue 4). The gateway queries as the application role. Two ways to see a
-- row: the tenant set for the transaction (`pa.tenant_id`), or — to verify a presented key
-- before its tenant is known — the key's public id (`pa.api_key_id`), which admits that one row
-- and nothing else. Without either setting no row matches (fail closed).
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys
    USING (tenant_id = current_setting('pa.tenant_id', true)
           OR id = current_setting('pa.api_key_id', true))
    WITH CHECK (tenant_id = current_setting('pa.tenant_id', true)
                OR id = current_setting('pa.api_key_id', true));

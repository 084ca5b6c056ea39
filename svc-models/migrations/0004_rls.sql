-- Row-level security (issue 4): svc-models queries as the application role. Tenant data
-- (users' keys, usage) is visible only inside a tenant transaction (`pa.tenant_id` set
-- locally); without the setting no row matches — fail closed.
ALTER TABLE user_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON user_keys
    USING (tenant_id = current_setting('pa.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pa.tenant_id', true));

ALTER TABLE usage_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_records FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_records
    USING (tenant_id = current_setting('pa.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pa.tenant_id', true));

-- Catalog tables hold platform rows (tenant_id = '_platform', readable by everyone) and a
-- tenant's own overrides (readable by that tenant only). Writing needs the row's tenant to be
-- the transaction's: platform rows are written only in a transaction scoped to '_platform',
-- which the service opens for administrators alone; a tenant can never turn a platform row
-- into its own (UPDATE's USING admits only the tenant's rows).
DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['providers', 'models', 'known_tags', 'policies'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY read_platform_or_own ON %I FOR SELECT
            USING (tenant_id = '_platform' OR tenant_id = current_setting('pa.tenant_id', true))$p$, t);
        EXECUTE format($p$CREATE POLICY insert_own ON %I FOR INSERT
            WITH CHECK (tenant_id = current_setting('pa.tenant_id', true))$p$, t);
        EXECUTE format($p$CREATE POLICY update_own ON %I FOR UPDATE
            USING (tenant_id = current_setting('pa.tenant_id', true))
            WITH CHECK (tenant_id = current_setting('pa.tenant_id', true))$p$, t);
        EXECUTE format($p$CREATE POLICY delete_own ON %I FOR DELETE
            USING (tenant_id = current_setting('pa.tenant_id', true))$p$, t);
    END LOOP;
END $$;

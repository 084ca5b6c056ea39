-- `run_owners` is the platform's own (one row per svc-runs process), not a tenant's: it carries
-- tenant_id '_platform' and forced row-level security like every table, so the application role
-- (which only ever acts inside a tenant transaction) sees none of it; the lease watcher reads and
-- writes it on the schema owner's pool, as maintenance does (docs/adr/0150-inline-run-leases.md).
ALTER TABLE run_owners ADD COLUMN tenant_id TEXT NOT NULL DEFAULT '_platform';
ALTER TABLE run_owners ENABLE ROW LEVEL SECURITY;
ALTER TABLE run_owners FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON run_owners
    USING (tenant_id = current_setting('pa.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pa.tenant_id', true));

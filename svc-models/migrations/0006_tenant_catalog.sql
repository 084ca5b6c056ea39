-- Two kinds of administrator (ADR 0130). Platform rows (tenant_id = '_platform') are written
-- only by platform administrators; a tenant administrator writes the tenant's own providers and
-- models (already allowed by the policies of 0004: their rows, their tenant) and switches
-- platform models off for the tenant through an overlay row, never by touching the platform row.
CREATE TABLE model_overlays (
    tenant_id   TEXT NOT NULL,
    label       TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_by  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, label)
);
ALTER TABLE model_overlays ENABLE ROW LEVEL SECURITY;
ALTER TABLE model_overlays FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON model_overlays
    USING (tenant_id = current_setting('pa.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pa.tenant_id', true));

-- A user's key is bound to the base URL of the provider it was given for: when that URL
-- changes, the key is not sent anywhere until its owner confirms the new URL. '' = a key stored
-- before this migration, bound to the provider's URL of the day (only platform administrators
-- could change a platform provider's URL since then).
ALTER TABLE user_keys ADD COLUMN bound_base_url TEXT NOT NULL DEFAULT '';

-- The tenant's users as the gateway has seen them (their identity provider owns who they are and
-- their roles; this keeps who signed in, with what roles, when, and whether an admin disabled
-- them here). Every authenticated request passes through it; see src/users.rs.
CREATE TABLE users (
    tenant_id     TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    display_name  TEXT NOT NULL DEFAULT '',
    roles         TEXT[] NOT NULL DEFAULT '{}',   -- as the last sign-in (not an API key) said
    auth_method   TEXT NOT NULL DEFAULT '',
    first_seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled_at   TIMESTAMPTZ,
    disabled_by   TEXT,
    PRIMARY KEY (tenant_id, user_id)
);
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON users
    USING (tenant_id = current_setting('pa.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pa.tenant_id', true));

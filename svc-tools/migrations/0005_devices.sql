-- Devices (issue 8): one-time enrollment codes and the enrolled devices' token hashes, what
-- each device announced at its last connection (platform, read-only jail, tools). Only hashes
-- of codes and tokens are stored (SHA-256: both are high-entropy random secrets).
ALTER TABLE devices
    ADD COLUMN token_hash   BYTEA,
    ADD COLUMN platform     TEXT NOT NULL DEFAULT '',
    ADD COLUMN read_only    BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN tools        JSONB NOT NULL DEFAULT '[]',
    ADD COLUMN connection_id TEXT,
    ADD COLUMN created_at   TIMESTAMPTZ NOT NULL DEFAULT now();
CREATE UNIQUE INDEX devices_by_id ON devices (id);
CREATE INDEX devices_by_owner ON devices (tenant_id, user_id);

CREATE TABLE device_enrollments (
    tenant_id   TEXT NOT NULL,
    code_hash   BYTEA NOT NULL,
    user_id     TEXT NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ,
    device_id   TEXT,
    PRIMARY KEY (tenant_id, code_hash)
);
CREATE UNIQUE INDEX device_enrollments_by_code ON device_enrollments (code_hash);

-- Row-level security. Besides the tenant (`pa.tenant_id`), a device presenting its token
-- before its tenant is known sees exactly its own row (`pa.device_id`, the token's public
-- part), and a code being redeemed admits exactly its own enrollment row
-- (`pa.device_code_hash`, hex of the code's hash); nothing else (fail closed).
DROP POLICY tenant_isolation ON devices;
CREATE POLICY tenant_isolation ON devices
    USING (tenant_id = current_setting('pa.tenant_id', true)
           OR id = current_setting('pa.device_id', true))
    WITH CHECK (tenant_id = current_setting('pa.tenant_id', true)
                OR id = current_setting('pa.device_id', true));

ALTER TABLE device_enrollments ENABLE ROW LEVEL SECURITY;
ALTER TABLE device_enrollments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON device_enrollments
    USING (tenant_id = current_setting('pa.tenant_id', true)
           OR encode(code_hash, 'hex') = current_setting('pa.device_code_hash', true))
    WITH CHECK (tenant_id = current_setting('pa.tenant_id', true)
                OR encode(code_hash, 'hex') = current_setting('pa.device_code_hash', true));

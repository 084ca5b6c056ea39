-- svc-gateway owns schema "gateway": API keys for scripts and gRPC integrators. Only a hash of
-- each key's secret is stored; the key is shown once, at creation.
CREATE TABLE api_keys (
    tenant_id    TEXT NOT NULL,
    id           TEXT NOT NULL,           -- public part of the key: pa_<id>_<secret>
    user_id      TEXT NOT NULL,
    name         TEXT NOT NULL,
    secret_hash  BYTEA NOT NULL,          -- SHA-256 of the secret part
    scopes       TEXT[] NOT NULL,
    roles        TEXT[] NOT NULL,         -- the creator's roles at creation, capped by scopes
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX api_keys_by_id ON api_keys (id);
CREATE INDEX api_keys_by_owner ON api_keys (tenant_id, user_id, created_at DESC);

-- Integrations carry their settings, blocked provider tags and sealed secrets (the AES-GCM
-- envelope of pa_kit::crypto, as svc-models' user_keys); chats keep their tool selection here,
-- keyed by chat id (svc-runs owns the chats themselves).
ALTER TABLE integrations
    ADD COLUMN provider_tags_blocked TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN config       JSONB NOT NULL DEFAULT '{}',
    ADD COLUMN secret_names TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN kek_id       TEXT,
    ADD COLUMN wrapped_dek  BYTEA,
    ADD COLUMN dek_nonce    BYTEA,
    ADD COLUMN ciphertext   BYTEA,
    ADD COLUMN nonce        BYTEA,
    ADD COLUMN updated_at   TIMESTAMPTZ NOT NULL DEFAULT now();
CREATE INDEX integrations_user ON integrations (tenant_id, user_id);

CREATE TABLE chat_tool_selection (
    tenant_id       TEXT NOT NULL,
    chat_id         TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    integration_ids TEXT[] NOT NULL DEFAULT '{}',
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, chat_id)
);
ALTER TABLE chat_tool_selection ENABLE ROW LEVEL SECURITY;
ALTER TABLE chat_tool_selection FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON chat_tool_selection
    USING (tenant_id = current_setting('pa.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pa.tenant_id', true));

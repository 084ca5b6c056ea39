-- Governance: provider state and platform keys, the tag vocabulary, classification policies,
-- and per-call usage records.
ALTER TABLE providers
    ADD COLUMN display_name TEXT NOT NULL DEFAULT '',
    ADD COLUMN enabled BOOLEAN NOT NULL DEFAULT TRUE,
    -- The admin platform key, envelope-encrypted (see keys.rs); NULL = none.
    ADD COLUMN platform_kek_id TEXT,
    ADD COLUMN platform_wrapped_dek BYTEA,
    ADD COLUMN platform_dek_nonce BYTEA,
    ADD COLUMN platform_ciphertext BYTEA,
    ADD COLUMN platform_nonce BYTEA,
    ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();

UPDATE providers SET display_name = 'Offline (no network, no key)' WHERE id = 'offline';

-- Tags a provider may carry. A tag outside this list makes governance refuse (fail closed).
CREATE TABLE known_tags (
    tenant_id   TEXT NOT NULL DEFAULT '_platform',
    tag         TEXT NOT NULL,
    description TEXT NOT NULL,
    PRIMARY KEY (tenant_id, tag)
);
INSERT INTO known_tags (tag, description) VALUES
    ('local', 'runs on infrastructure the operator controls'),
    ('self-hosted', 'an inference server the operator runs'),
    ('zero-retention', 'the provider keeps no prompts or outputs'),
    ('eu-hosted', 'data is processed in the EU'),
    ('us-hosted', 'data is processed in the US'),
    ('trains-on-data', 'the provider may train on prompts');

-- classification: 1 public, 2 internal, 3 confidential, 4 restricted (runs.proto).
CREATE TABLE policies (
    tenant_id       TEXT NOT NULL DEFAULT '_platform',
    classification  SMALLINT NOT NULL CHECK (classification BETWEEN 1 AND 4),
    required_tags   TEXT[] NOT NULL DEFAULT '{}',
    forbidden_tags  TEXT[] NOT NULL DEFAULT '{}',
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, classification)
);
INSERT INTO policies (classification, required_tags, forbidden_tags) VALUES
    (1, '{}', '{}'),
    (2, '{}', '{trains-on-data}'),
    (3, '{zero-retention}', '{trains-on-data}'),
    (4, '{local}', '{trains-on-data}');

CREATE TABLE usage_records (
    tenant_id           TEXT NOT NULL,
    id                  BIGINT GENERATED ALWAYS AS IDENTITY,
    user_id             TEXT NOT NULL,
    run_id              TEXT NOT NULL,
    label               TEXT NOT NULL,
    key_source          TEXT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cost_micros         BIGINT NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX usage_by_user_time ON usage_records (tenant_id, user_id, created_at);
CREATE INDEX usage_by_run ON usage_records (run_id);

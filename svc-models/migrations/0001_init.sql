-- svc-models owns schema "models". Catalog rows are platform-wide: tenant_id = '_platform'.
CREATE TABLE providers (
    tenant_id   TEXT NOT NULL DEFAULT '_platform',
    id          TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('offline', 'openai_compatible')),
    base_url    TEXT,
    tags        TEXT[] NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE models (
    tenant_id           TEXT NOT NULL DEFAULT '_platform',
    label               TEXT NOT NULL,
    provider_id         TEXT NOT NULL,
    model               TEXT NOT NULL,
    display_name        TEXT NOT NULL,
    enabled             BOOLEAN NOT NULL DEFAULT TRUE,
    context_window      INTEGER NOT NULL,
    input_price_micros  BIGINT NOT NULL DEFAULT 0,
    output_price_micros BIGINT NOT NULL DEFAULT 0,
    supports_tools      BOOLEAN NOT NULL DEFAULT FALSE,
    supports_vision     BOOLEAN NOT NULL DEFAULT FALSE,
    supports_reasoning  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, label),
    FOREIGN KEY (tenant_id, provider_id) REFERENCES providers (tenant_id, id)
);

-- The honest offline model: deterministic, no network, no key; it echoes what it was told.
INSERT INTO providers (id, kind, tags) VALUES ('offline', 'offline', ARRAY['local', 'zero-retention']);
INSERT INTO models (label, provider_id, model, display_name, context_window)
VALUES ('offline:echo', 'offline', 'echo', 'Offline echo (no real model; repeats your message)', 32768);

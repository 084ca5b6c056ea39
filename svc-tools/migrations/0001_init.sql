-- svc-tools owns schema "tools".
CREATE TABLE integrations (
    tenant_id   TEXT NOT NULL,
    id          TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    required_provider_tags TEXT[] NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE devices (
    tenant_id   TEXT NOT NULL,
    id          TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    last_seen_at TIMESTAMPTZ,
    PRIMARY KEY (tenant_id, id)
);

-- The tools a run may use, fixed at run start (ToolsetAssembler::assemble).
CREATE TABLE toolset_snapshots (
    tenant_id   TEXT NOT NULL,
    id          TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    provider_tags TEXT[] NOT NULL,
    tools       JSONB NOT NULL,
    blocked     JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX toolset_snapshots_run ON toolset_snapshots (tenant_id, run_id);

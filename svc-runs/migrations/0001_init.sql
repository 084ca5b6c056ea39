-- svc-runs owns schema "runs": chats, their messages, and runs.
CREATE TABLE chats (
    tenant_id       TEXT NOT NULL,
    id              TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    title           TEXT NOT NULL,
    classification  SMALLINT NOT NULL DEFAULT 2,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX chats_by_owner ON chats (tenant_id, user_id, created_at DESC, id DESC);

-- Run ids are global (they name the run's Redis event stream), so the key is id alone.
CREATE TABLE runs (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL,
    user_id             TEXT NOT NULL,
    chat_id             TEXT NOT NULL,
    parent_run_id       TEXT,
    mode                SMALLINT NOT NULL,
    status              SMALLINT NOT NULL,
    requested_model     TEXT NOT NULL,
    resolved_label      TEXT NOT NULL,
    model_reason        TEXT NOT NULL,
    provider_tags       TEXT[] NOT NULL DEFAULT '{}',
    fallback_labels     TEXT[] NOT NULL DEFAULT '{}',
    toolset_snapshot_id TEXT NOT NULL,
    assistant_message_id TEXT NOT NULL,
    spec                BYTEA NOT NULL,
    input_tokens        BIGINT NOT NULL DEFAULT 0,
    output_tokens       BIGINT NOT NULL DEFAULT 0,
    total_tokens        BIGINT NOT NULL DEFAULT 0,
    model_requests      INTEGER NOT NULL DEFAULT 0,
    tool_calls          INTEGER NOT NULL DEFAULT 0,
    cost_micros         BIGINT NOT NULL DEFAULT 0,
    error_code          TEXT,
    error_message       TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at         TIMESTAMPTZ,
    FOREIGN KEY (tenant_id, chat_id) REFERENCES chats (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX runs_by_chat ON runs (tenant_id, chat_id, created_at);
CREATE INDEX runs_by_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;

CREATE TABLE messages (
    tenant_id   TEXT NOT NULL,
    id          TEXT NOT NULL,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY,
    chat_id     TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content     TEXT NOT NULL,
    run_id      TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, chat_id) REFERENCES chats (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX messages_by_chat ON messages (tenant_id, chat_id, seq);

-- svc-memory owns schema "memory". Embeddings (pgvector) arrive with the memory issue.
CREATE TABLE items (
    tenant_id   TEXT NOT NULL,
    id          TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    scope       SMALLINT NOT NULL CHECK (scope IN (1, 2)),
    chat_id     TEXT,
    content     TEXT NOT NULL,
    tags        TEXT[] NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CHECK ((scope = 2) = (chat_id IS NOT NULL))
);
CREATE INDEX items_owner ON items (tenant_id, user_id, scope, chat_id);

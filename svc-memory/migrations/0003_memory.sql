-- The memory issue: kinds, provenance, pinning, soft delete, embeddings (pgvector) and full text.
CREATE EXTENSION IF NOT EXISTS vector;

ALTER TABLE items
    ADD COLUMN kind SMALLINT NOT NULL DEFAULT 1 CHECK (kind BETWEEN 1 AND 4),
    ADD COLUMN source_chat_id TEXT,
    ADD COLUMN source_run_id TEXT,
    ADD COLUMN source_message_id TEXT,
    ADD COLUMN document_id TEXT,
    ADD COLUMN document_name TEXT,
    ADD COLUMN chunk_index INTEGER,
    ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN deleted_at TIMESTAMPTZ,
    -- Any dimension: the model id and dimension travel with the vector, and a search compares
    -- only vectors of the query's model.
    ADD COLUMN embedding vector,
    ADD COLUMN embedding_model TEXT,
    ADD COLUMN embedding_dims INTEGER,
    ADD COLUMN tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    ADD CHECK ((embedding IS NULL) = (embedding_dims IS NULL));

-- Approximate nearest neighbours (cosine) for the offline model's 384 dimensions; vectors of
-- other dimensions are searched exactly (add an index like this one per dimension in use).
CREATE INDEX items_embedding_384 ON items
    USING hnsw ((embedding::vector(384)) vector_cosine_ops)
    WHERE embedding_dims = 384;
CREATE INDEX items_tsv ON items USING gin (tsv);
CREATE INDEX items_document ON items (tenant_id, user_id, document_id) WHERE document_id IS NOT NULL;
CREATE INDEX items_list ON items (tenant_id, user_id, id DESC) WHERE deleted_at IS NULL;

-- Every model attempt of a run (fallbacks included), and cached prompt tokens.
ALTER TABLE runs
    ADD COLUMN attempts JSONB NOT NULL DEFAULT '[]',
    ADD COLUMN cached_input_tokens BIGINT NOT NULL DEFAULT 0;

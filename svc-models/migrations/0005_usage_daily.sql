-- Usage rolled up per UTC day, user and model by the `rollup_usage` schedule. A day is rolled
-- up once it is over (usage rows are stamped now(), so a finished day never changes); reads
-- take the days up to the watermark from here and the later days from usage_records.
CREATE TABLE usage_daily (
    tenant_id           TEXT NOT NULL,
    day                 DATE NOT NULL,
    user_id             TEXT NOT NULL,
    label               TEXT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cost_micros         BIGINT NOT NULL,
    calls               BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, day, user_id, label)
);
ALTER TABLE usage_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_daily FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_daily
    USING (tenant_id = current_setting('pa.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('pa.tenant_id', true));

-- The watermark: every day up to `rolled_through` is in usage_daily. One platform row, which
-- the application role may read and only the owner (the maintenance task) writes.
CREATE TABLE usage_rollup_state (
    tenant_id      TEXT NOT NULL DEFAULT '_platform' PRIMARY KEY CHECK (tenant_id = '_platform'),
    rolled_through DATE NOT NULL
);
ALTER TABLE usage_rollup_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_rollup_state FORCE ROW LEVEL SECURITY;
CREATE POLICY read_platform ON usage_rollup_state FOR SELECT USING (tenant_id = '_platform');

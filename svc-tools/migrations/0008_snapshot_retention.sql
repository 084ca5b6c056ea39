-- The `purge_toolset_snapshots` schedule removes snapshots older than the retention, oldest
-- first, in batches (ADR 0233): each batch finds its rows through this index instead of
-- scanning every snapshot ever written.
CREATE INDEX IF NOT EXISTS toolset_snapshots_created ON toolset_snapshots (created_at);
